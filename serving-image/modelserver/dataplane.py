"""The served model, protocol-agnostic: loading, readiness, metadata and inference.

Transports (rest.py, and any other) decode requests into arrays, call ``infer`` and map the
domain errors of errors.py onto their own status codes. Nothing here knows about HTTP.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from prometheus_client import CollectorRegistry

from .batching import Arrays, Batcher
from .distribution import Distribution
from .errors import (
    InferenceFailedError,
    InvalidRequestError,
    NotFoundError,
    NotReadyError,
    OverloadedError,
)
from .faults import with_faults
from .loader import LoadError, fetch_model, fetch_reference
from .metrics import Metrics
from .redact import scrub
from .reference import MAX_PROFILE_BYTES, ProfileError, parse_profile
from .runtime import ProviderMissingError, Runtime, UnsupportedModelError
from .settings import Settings
from .tensors import InferRequest, Limits

log = logging.getLogger(__name__)

try:
    SERVER_VERSION = version("modelserver")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    SERVER_VERSION = "0.0.0"


# --- the served model ---------------------------------------------------------------------------


class DataPlane:
    """The one model this process serves, its readiness, and inference on it."""

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics(
            registry if registry is not None else CollectorRegistry(),
            model=settings.model_name,
            version=settings.model_version,
            revision=settings.revision,
            track=settings.track,
            grpc=settings.grpc_port != 0,
        )
        self.runtime: Runtime | None = None
        self.distribution: Distribution | None = None
        self.sha256: str | None = None
        self.state = "loading"  # loading | ready | failed
        self.reason = "model is loading"
        self.draining = False
        # 0 in the settings is no cap.
        self._inflight_cap = settings.max_inflight_requests or sys.maxsize
        # One run at a time: onnxruntime already spreads a run over the intra-op threads.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="infer")
        self._batcher: Batcher | None = None
        self._load_task: asyncio.Task[None] | None = None
        self._inline = False  # run on the event loop: set at load for very short runs
        # Inline and nothing around the run (no faults): transports call ``infer_now``.
        self.run_inline = False
        self.limits = Limits(
            max_elements=settings.max_body_bytes,  # no element is smaller than one byte
            max_memory=settings.max_request_memory_bytes,
            max_json_bytes=settings.max_json_bytes,
        )
        # Fault injection wraps the model run only when configured: the served path stays bare.
        self._infer: Callable[[Arrays], Awaitable[Arrays]] = with_faults(self._run_model, settings)

    # lifecycle

    async def start(self) -> None:
        """Begin loading in the background: liveness answers while a big model downloads."""
        self._load_task = asyncio.create_task(self._load())

    async def wait_loaded(self) -> None:
        if self._load_task is not None:
            await asyncio.shield(self._load_task)

    async def close(self) -> None:
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        if self._batcher is not None:
            await self._batcher.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _load(self) -> None:
        s = self.settings
        started = time.perf_counter()
        try:
            path, digest = await asyncio.to_thread(
                fetch_model,
                s.model_uri,
                sha256=s.model_sha256,
                model_dir=s.model_dir,
                max_bytes=s.download_max_bytes,
                retries=s.download_retries,
                timeout_s=s.download_timeout_s,
                endpoint=s.model_endpoint,
                region=s.model_region,
            )
            runtime = await asyncio.to_thread(
                Runtime, path, threads=s.threads, provider=s.execution_provider
            )
            if s.distribution:
                self.distribution = await asyncio.to_thread(self._distribution, runtime)
        except (LoadError, UnsupportedModelError, ProviderMissingError, ProfileError) as exc:
            self._fail(str(exc))
            return
        except Exception as exc:  # onnxruntime raises its own types for corrupt models
            self._fail(f"onnxruntime cannot load the model: {exc}")
            return
        elapsed = time.perf_counter() - started
        self.runtime = runtime
        self.sha256 = digest
        if s.batch_max_size > 1 and runtime.batchable:
            self._batcher = Batcher(
                runtime.run,
                self._executor,
                max_batch_size=s.batch_max_size,
                window_s=s.batch_window_ms / 1000.0,
                on_run=self.metrics.observe_run,
            )
        elif s.batch_max_size > 1:
            log.info("dynamic batching off: the model has no dynamic batch axis")
        run_s = await asyncio.to_thread(runtime.time_run)
        # A run shorter than the hop to the inference thread (~0.1 ms of loop time, plus a
        # wake-up) is cheaper on the event loop itself, and blocks it no longer than the hop.
        self._inline = (
            self._batcher is None and run_s is not None and run_s * 1000 <= s.inline_run_max_ms
        )
        self.run_inline = self._inline and self._infer == self._run_model
        self.metrics.model_loaded(seconds=elapsed, sha256=digest, provider=runtime.provider)
        # Everything alive now (onnxruntime, numpy, settings) lives as long as the process:
        # frozen, the collector's full passes skip it instead of stalling requests for tens of ms.
        gc.collect()
        gc.freeze()
        self.state, self.reason = "ready", ""
        log.info(
            "model %s version %s loaded in %.2fs (sha256 %s, %s, %d threads, batching %s, run %s)",
            s.model_name,
            s.model_version,
            elapsed,
            digest,
            runtime.provider,
            s.threads,
            "on" if self._batcher else "off",
            "inline" if self._inline else "on a thread",
        )

    def _distribution(self, runtime: Runtime) -> Distribution:
        """The output and input counters, binned by the reference profile when there is one."""
        s = self.settings
        profile = None
        if s.reference_uri:
            path, _ = fetch_reference(
                s.reference_uri,
                sha256=s.reference_sha256,
                model_dir=s.model_dir,
                max_bytes=MAX_PROFILE_BYTES,
                retries=s.download_retries,
                timeout_s=s.download_timeout_s,
                endpoint=s.model_endpoint,  # the reference sits in the model's store
                region=s.model_region,
            )
            profile = parse_profile(path.read_bytes())  # ProfileError says "reference profile"
        distribution = Distribution(
            self.metrics.identity,
            {n: (t.datatype, t.shape) for n, t in runtime.outputs.items()},
            {n: (t.datatype, t.shape) for n, t in runtime.inputs.items()},
            profile,
        )
        self.metrics.registry.register(distribution)
        return distribution

    def _fail(self, reason: str) -> None:
        reason = scrub(reason, self.settings.model_uri)  # the reason is served to anyone
        self.state, self.reason = "failed", reason
        log.error("model %s will not be served: %s", self.settings.model_name, reason)

    def _run(self, feeds: Arrays) -> tuple[Arrays, float]:
        assert self.runtime is not None
        started = time.perf_counter()
        return self.runtime.run(feeds), time.perf_counter() - started

    # state

    @property
    def ready(self) -> bool:
        return self.state == "ready" and not self.draining

    @property
    def not_ready_reason(self) -> str:
        if self.state == "failed":
            return f"model load failed: {self.reason}"
        if self.state == "loading":
            return self.reason
        return "server is draining" if self.draining else ""

    def check_model(self, name: str, model_version: str | None) -> None:
        if name != self.settings.model_name:
            raise NotFoundError(f"unknown model '{name}'")
        if model_version is not None and model_version != self.settings.model_version:
            raise NotFoundError(f"unknown version '{model_version}' of model '{name}'")

    def server_metadata(self) -> dict[str, Any]:
        return {
            "name": "modelserver",
            "version": SERVER_VERSION,
            "extensions": ["binary_tensor_data"],
        }

    def loaded(self) -> Runtime:
        """The loaded model, whose inputs and outputs requests are decoded against."""
        if self.runtime is None:
            raise NotReadyError(f"model not ready: {self.not_ready_reason}")
        return self.runtime

    def model_metadata(self) -> dict[str, Any]:
        runtime = self.loaded()
        return {
            "name": self.settings.model_name,
            "versions": [self.settings.model_version],
            "platform": "onnxruntime_onnx",
            "inputs": [s.metadata() for s in runtime.inputs.values()],
            "outputs": [s.metadata() for s in runtime.outputs.values()],
        }

    # inference

    @property
    def inflight(self) -> int:
        return self.metrics.inflight  # one count, the one the metrics show

    def enter(self) -> None:
        """Admit one more request in flight, or refuse it when the cap is reached."""
        metrics = self.metrics
        if metrics.inflight >= self._inflight_cap:
            cap = self._inflight_cap
            raise OverloadedError(f"{metrics.inflight} requests in flight, the limit is {cap}")
        metrics.inflight += 1

    def leave(self) -> None:
        self.metrics.inflight -= 1

    def infer(self, request: InferRequest) -> Awaitable[Arrays]:
        return self._infer(request.inputs)  # the coroutine itself: no extra frame per request

    def infer_now(self, request: InferRequest) -> Arrays:
        """``infer`` without a coroutine, when ``run_inline``: a run of a few microseconds
        does not pay for a coroutine and its awaits (about 4 us a request)."""
        feeds = request.inputs
        runtime = self.runtime
        assert runtime is not None
        started = time.perf_counter()
        try:
            out = runtime.run(feeds)
        except Exception as exc:
            raise _runtime_error(exc) from None
        seconds = time.perf_counter() - started
        # _observe, inline: this is the path of every request to a small model.
        shape = next(iter(feeds.values())).shape
        metrics = self.metrics
        metrics.inference_duration.observe(seconds)
        metrics.batch_size.observe(shape[0] if shape else 1)
        if self.distribution is not None:
            self.distribution.record(feeds, out)
        return out

    async def _run_model(self, feeds: Arrays) -> Arrays:
        try:
            if self._batcher is not None:
                out = await self._batcher.submit(feeds)  # it observes its own runs
            elif self._inline:
                out, seconds = self._run(feeds)
            else:
                loop = asyncio.get_running_loop()
                out, seconds = await loop.run_in_executor(self._executor, self._run, feeds)
        except Exception as exc:
            raise _runtime_error(exc) from None
        if self._batcher is None:
            self._observe(feeds, out, seconds)
        elif self.distribution is not None:
            self.distribution.record(feeds, out)
        return out

    def _observe(self, feeds: Arrays, out: Arrays, seconds: float) -> None:
        """Metrics of one unbatched run (the batcher observes its own runs)."""
        shape = next(iter(feeds.values())).shape
        metrics = self.metrics
        metrics.inference_duration.observe(seconds)
        metrics.batch_size.observe(shape[0] if shape else 1)
        if self.distribution is not None:
            self.distribution.record(feeds, out)


def _runtime_error(exc: Exception) -> InvalidRequestError | InferenceFailedError:
    # onnxruntime's InvalidArgument means the input values were wrong (e.g. an index out of
    # range): the client's fault. Anything else is ours. Only the first line is sent.
    message = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else type(exc).__name__
    if type(exc).__name__ == "InvalidArgument":
        return InvalidRequestError(f"inference rejected the input: {message}")
    log.error("inference failed: %s", exc)
    return InferenceFailedError(f"inference failed: {message}")
