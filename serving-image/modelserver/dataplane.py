"""Protocol-agnostic inference: request decoding and validation, running, response encoding.

Validation is hand-written rather than a pydantic model: it runs on every request on the event
loop, and each failure has to name the tensor and say what is wrong with it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
import orjson
from prometheus_client import CollectorRegistry

from .batching import Arrays, Batcher
from .datatypes import ALL_OIP_DATATYPES, numpy_to_oip
from .loader import LoadError, fetch_model
from .metrics import Metrics
from .runtime import Runtime, TensorSpec, UnsupportedModelError
from .settings import Settings

log = logging.getLogger(__name__)

try:
    SERVER_VERSION = version("modelserver")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    SERVER_VERSION = "0.0.0"


class InferError(Exception):
    """A failure with the HTTP status and message to send back."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _bad(message: str) -> InferError:
    return InferError(400, message)


@dataclass(slots=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(slots=True)
class InferRequest:
    id: str | None
    inputs: Arrays
    outputs: list[RequestedOutput]


# --- decoding -----------------------------------------------------------------------------------


def _check_shape(name: str, raw: Any, spec: TensorSpec, max_elements: int) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(
        type(d) is int and d >= 0  # bool is an int subclass: reject it explicitly
        for d in raw
    ):
        raise _bad(f"input '{name}': shape must be a list of non-negative integers, got {raw!r}")
    shape = tuple(raw)
    if len(shape) != len(spec.shape):
        raise _bad(
            f"input '{name}': shape {list(shape)} has rank {len(shape)}, the model expects "
            f"rank {len(spec.shape)} {list(spec.shape)}"
        )
    for got, want in zip(shape, spec.shape, strict=True):
        if want != -1 and got != want:
            raise _bad(
                f"input '{name}': shape {list(shape)} does not match the model's "
                f"{list(spec.shape)} (-1 is any size)"
            )
    count = 1
    for d in shape:
        count *= d
    if count > max_elements:
        raise _bad(f"input '{name}': shape {list(shape)} is too large ({count} elements)")
    return shape


def _flatten_strings(name: str, data: list[Any], out: list[str]) -> None:
    for item in data:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, list):
            _flatten_strings(name, item, out)
        else:
            raise _bad(f"input '{name}': BYTES data must be strings, got {type(item).__name__}")


def _from_json(
    name: str, spec: TensorSpec, data: Any, shape: tuple[int, ...]
) -> np.ndarray[Any, Any]:
    count = int(np.prod(shape, dtype=np.int64))
    if not isinstance(data, list):
        raise _bad(f"input '{name}': data must be a list, got {type(data).__name__}")
    if spec.datatype == "BYTES":
        flat: list[str] = []
        _flatten_strings(name, data, flat)
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
    else:
        try:
            arr = np.asarray(data)
        except (ValueError, TypeError):
            raise _bad(f"input '{name}': data is ragged or has mixed types") from None
        arr = _convert(name, spec, arr, data) if arr.size else arr.astype(spec.dtype)
    if arr.size != count:
        raise _bad(
            f"input '{name}': {arr.size} data elements do not match shape {list(shape)} "
            f"({count} elements)"
        )
    return arr.reshape(shape)


def _convert(
    name: str, spec: TensorSpec, arr: np.ndarray[Any, Any], data: list[Any]
) -> np.ndarray[Any, Any]:
    """Cast parsed JSON numbers to the model's type, refusing lossy or out-of-range casts."""
    kind = arr.dtype.kind
    want = spec.dtype.kind
    if want == "b":
        ok = kind == "b"
    elif want in "iu":
        if kind in "iu":
            info = np.iinfo(spec.dtype)  # type: ignore[type-var]
            if int(arr.min()) < info.min or int(arr.max()) > info.max:
                raise _bad(f"input '{name}': values out of range for {spec.datatype}")
            ok = True
        elif kind == "f" and bool(np.all(arr == np.trunc(arr))):
            # numpy turns a mix of int64 and larger uint64 values into float64: cast exactly.
            try:
                return np.asarray(data, dtype=spec.dtype)
            except (OverflowError, ValueError, TypeError):
                raise _bad(f"input '{name}': values out of range for {spec.datatype}") from None
        else:
            ok = False
    else:  # float
        ok = kind in "iuf"
    if not ok:
        what = {"b": "booleans", "U": "strings", "O": "mixed or out-of-range values"}.get(
            kind, f"{arr.dtype} values"
        )
        raise _bad(f"input '{name}': {spec.datatype} data cannot hold {what}")
    return arr.astype(spec.dtype, copy=False)


def _from_binary(
    name: str, spec: TensorSpec, body: bytes, start: int, size: int, shape: tuple[int, ...]
) -> np.ndarray[Any, Any]:
    count = int(np.prod(shape, dtype=np.int64))
    if spec.datatype == "BYTES":
        items: list[str] = []
        pos, end = start, start + size
        while pos < end:
            if pos + 4 > end:
                raise _bad(f"input '{name}': truncated BYTES length prefix in binary data")
            length = int.from_bytes(body[pos : pos + 4], "little")
            pos += 4
            if pos + length > end:
                raise _bad(f"input '{name}': BYTES element overruns its binary data")
            try:
                items.append(body[pos : pos + length].decode())
            except UnicodeDecodeError:
                raise _bad(f"input '{name}': BYTES element is not valid UTF-8") from None
            pos += length
        if len(items) != count:
            raise _bad(
                f"input '{name}': {len(items)} BYTES elements do not match shape "
                f"{list(shape)} ({count} elements)"
            )
        arr = np.empty(count, dtype=object)
        arr[:] = items
        return arr.reshape(shape)
    need = count * spec.dtype.itemsize
    if size != need:
        raise _bad(
            f"input '{name}': binary_data_size {size} does not match shape {list(shape)} "
            f"of {spec.datatype} ({need} bytes)"
        )
    arr = np.frombuffer(body, dtype=spec.dtype, count=count, offset=start)
    if not arr.flags.aligned:
        arr = arr.copy()
    return arr.reshape(shape)


def decode_infer_request(
    body: bytes,
    header_length: int | None,
    inputs: Mapping[str, TensorSpec],
    outputs: Mapping[str, TensorSpec],
    *,
    max_elements: int,
) -> InferRequest:
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise _bad(
                f"Inference-Header-Content-Length {header_length} is outside the "
                f"{len(body)}-byte body"
            )
        header = body[:header_length]
    else:
        header = body
    try:
        doc = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"malformed JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise _bad("request body must be a JSON object")
    req_id = doc.get("id")
    if req_id is not None and not isinstance(req_id, str):
        raise _bad("'id' must be a string")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise _bad("'parameters' must be an object")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise _bad("'inputs' must be a non-empty list")

    binary_pos = header_length if header_length is not None else len(body)
    arrays: Arrays = {}
    for raw in raw_inputs:
        if not isinstance(raw, dict):
            raise _bad("each input must be an object")
        name = raw.get("name")
        if not isinstance(name, str):
            raise _bad("each input needs a string 'name'")
        spec = inputs.get(name)
        if spec is None:
            raise _bad(f"unknown input '{name}'; the model takes {sorted(inputs)}")
        if name in arrays:
            raise _bad(f"input '{name}' is given more than once")
        datatype = raw.get("datatype")
        if datatype != spec.datatype:
            if datatype not in ALL_OIP_DATATYPES:
                raise _bad(f"input '{name}': unknown datatype {datatype!r}")
            raise _bad(
                f"input '{name}': datatype {datatype} does not match the model's {spec.datatype}"
            )
        shape = _check_shape(name, raw.get("shape"), spec, max_elements)
        in_params = raw.get("parameters") or {}
        if not isinstance(in_params, dict):
            raise _bad(f"input '{name}': 'parameters' must be an object")
        size = in_params.get("binary_data_size")
        if size is not None:
            if header_length is None:
                raise _bad(
                    f"input '{name}': binary_data_size given without "
                    "Inference-Header-Content-Length"
                )
            if type(size) is not int or size < 0:
                raise _bad(f"input '{name}': binary_data_size must be a non-negative integer")
            if "data" in raw:
                raise _bad(f"input '{name}': has both 'data' and binary_data_size")
            if binary_pos + size > len(body):
                raise _bad(f"input '{name}': binary_data_size {size} overruns the request body")
            arrays[name] = _from_binary(name, spec, body, binary_pos, size, shape)
            binary_pos += size
        elif "data" in raw:
            arrays[name] = _from_json(name, spec, raw["data"], shape)
        else:
            raise _bad(f"input '{name}': has no 'data' and no binary_data_size")
    if binary_pos != len(body):
        raise _bad(f"{len(body) - binary_pos} bytes of binary data belong to no input")
    missing = [n for n in inputs if n not in arrays]
    if missing:
        raise _bad(f"missing input '{missing[0]}'; the model needs {list(inputs)}")

    binary_all = params.get("binary_data_output", False)
    if not isinstance(binary_all, bool):
        raise _bad("parameter 'binary_data_output' must be a boolean")
    raw_outputs = doc.get("outputs")
    requested: list[RequestedOutput] = []
    if raw_outputs is None:
        requested = [RequestedOutput(n, binary_all) for n in outputs]
    elif not isinstance(raw_outputs, list):
        raise _bad("'outputs' must be a list")
    else:
        for raw in raw_outputs:
            if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                raise _bad("each requested output needs a string 'name'")
            name = raw["name"]
            if name not in outputs:
                raise _bad(f"unknown output '{name}'; the model has {list(outputs)}")
            out_params = raw.get("parameters") or {}
            if not isinstance(out_params, dict):
                raise _bad(f"output '{name}': 'parameters' must be an object")
            binary = out_params.get("binary_data", binary_all)
            if not isinstance(binary, bool):
                raise _bad(f"output '{name}': parameter 'binary_data' must be a boolean")
            requested.append(RequestedOutput(name, binary))
    return InferRequest(req_id, arrays, requested)


# --- encoding -----------------------------------------------------------------------------------


def _json_data(arr: np.ndarray[Any, Any], datatype: str) -> Any:
    if datatype == "BYTES":
        return [x.decode(errors="replace") if isinstance(x, bytes) else str(x) for x in arr.flat]
    if datatype == "FP16":
        arr = arr.astype(np.float32)  # orjson's numpy support has no float16
    return np.ascontiguousarray(arr).reshape(-1)


def _binary_data(arr: np.ndarray[Any, Any], datatype: str) -> bytes:
    if datatype == "BYTES":
        parts = []
        for x in arr.flat:
            raw = x if isinstance(x, bytes) else str(x).encode()
            parts.append(len(raw).to_bytes(4, "little"))
            parts.append(raw)
        return b"".join(parts)
    return np.ascontiguousarray(arr).tobytes()


def encode_infer_response(
    *, model_name: str, model_version: str, request: InferRequest, results: Arrays
) -> tuple[bytes, int | None]:
    """Response body and, when binary outputs follow the JSON, the JSON's length."""
    outs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for wanted in request.outputs:
        arr = results[wanted.name]
        datatype = numpy_to_oip(arr.dtype)
        entry: dict[str, Any] = {"name": wanted.name, "datatype": datatype, "shape": arr.shape}
        if wanted.binary:
            blob = _binary_data(arr, datatype)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _json_data(arr, datatype)
        outs.append(entry)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        doc["id"] = request.id
    doc["outputs"] = outs
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if blobs:
        return b"".join([header, *blobs]), len(header)
    return header, None


# --- the served model ---------------------------------------------------------------------------


class DataPlane:
    """The one model this process serves, its readiness, and inference on it."""

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self._started = time.monotonic()
        self.metrics = Metrics(
            registry if registry is not None else CollectorRegistry(),
            model=settings.model_name,
            version=settings.model_version,
            revision=settings.revision,
            track=settings.track,
        )
        self.runtime: Runtime | None = None
        self.sha256: str | None = None
        self.state = "loading"  # loading | ready | failed
        self.reason = "model is loading"
        self.draining = False
        # One run at a time: onnxruntime already spreads a run over the intra-op threads.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="infer")
        self._batcher: Batcher | None = None
        self._load_task: asyncio.Task[None] | None = None
        self._max_elements = settings.max_body_bytes  # no element is smaller than one byte

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
            )
            runtime = await asyncio.to_thread(
                Runtime, path, threads=s.threads, provider=s.execution_provider
            )
        except (LoadError, UnsupportedModelError) as exc:
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
                on_run=self._observe_run,
            )
        elif s.batch_max_size > 1:
            log.info("dynamic batching off: the model has no dynamic batch axis")
        self.metrics.model_loaded(seconds=elapsed, sha256=digest, provider=runtime.provider)
        self.state, self.reason = "ready", ""
        log.info(
            "model %s version %s loaded in %.2fs (sha256 %s, %s, %d threads, batching %s)",
            s.model_name,
            s.model_version,
            elapsed,
            digest,
            runtime.provider,
            s.threads,
            "on" if self._batcher else "off",
        )

    def _fail(self, reason: str) -> None:
        self.state, self.reason = "failed", reason
        log.error("model %s will not be served: %s", self.settings.model_name, reason)

    def _observe_run(self, rows: int, seconds: float) -> None:
        self.metrics.inference_duration.observe(seconds)
        self.metrics.batch_size.observe(rows)

    def _run(self, feeds: Arrays) -> Arrays:
        assert self.runtime is not None
        started = time.perf_counter()
        out = self.runtime.run(feeds)
        rows = next(iter(feeds.values())).shape[:1]
        self._observe_run(rows[0] if rows else 1, time.perf_counter() - started)
        return out

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
            raise InferError(404, f"unknown model '{name}'")
        if model_version is not None and model_version != self.settings.model_version:
            raise InferError(404, f"unknown version '{model_version}' of model '{name}'")

    def server_metadata(self) -> dict[str, Any]:
        return {
            "name": "modelserver",
            "version": SERVER_VERSION,
            "extensions": ["binary_tensor_data"],
        }

    def model_metadata(self) -> dict[str, Any]:
        if self.runtime is None:
            raise InferError(503, f"model not ready: {self.not_ready_reason}")
        return {
            "name": self.settings.model_name,
            "versions": [self.settings.model_version],
            "platform": "onnxruntime_onnx",
            "inputs": [s.metadata() for s in self.runtime.inputs.values()],
            "outputs": [s.metadata() for s in self.runtime.outputs.values()],
        }

    # inference

    def decode(self, body: bytes, header_length: int | None) -> InferRequest:
        if self.runtime is None:
            raise InferError(503, f"model not ready: {self.not_ready_reason}")
        return decode_infer_request(
            body,
            header_length,
            self.runtime.inputs,
            self.runtime.outputs,
            max_elements=self._max_elements,
        )

    def _faults_on(self) -> bool:
        after = self.settings.fault_after_s
        return after <= 0 or time.monotonic() - self._started >= after

    async def infer(self, request: InferRequest) -> Arrays:
        s = self.settings
        if s.fault_latency_ms > 0 and self._faults_on():
            await asyncio.sleep(s.fault_latency_ms / 1000.0)
        if s.fault_error_ratio > 0 and random.random() < s.fault_error_ratio and self._faults_on():
            raise InferError(500, "injected fault (MODELSERVER_FAULT_ERROR_RATIO)")
        try:
            if self._batcher is not None:
                return await self._batcher.submit(request.inputs)
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._run, request.inputs)
        except Exception as exc:
            raise _runtime_error(exc) from None

    def encode(self, request: InferRequest, results: Arrays) -> tuple[bytes, int | None]:
        return encode_infer_response(
            model_name=self.settings.model_name,
            model_version=self.settings.model_version,
            request=request,
            results=results,
        )


def _runtime_error(exc: Exception) -> InferError:
    # onnxruntime's InvalidArgument means the input values were wrong (e.g. an index out of
    # range): the client's fault. Anything else is ours. Only the first line is sent.
    message = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else type(exc).__name__
    if type(exc).__name__ == "InvalidArgument":
        return InferError(400, f"inference rejected the input: {message}")
    log.error("inference failed: %s", exc)
    return InferError(500, f"inference failed: {message}")
