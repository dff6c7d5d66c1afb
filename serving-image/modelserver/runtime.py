"""The onnxruntime session and the model metadata read from it."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from .datatypes import OIP_TO_NUMPY, ONNX_TO_OIP

log = logging.getLogger(__name__)


class UnsupportedModelError(Exception):
    """The model has an input this server cannot feed."""


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str  # OIP name
    shape: tuple[int, ...]  # -1 for a dynamic dimension
    dtype: np.dtype[np.generic]

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def _dims(shape: list[Any] | None) -> tuple[int, ...]:
    # onnxruntime reports symbolic dims as strings and unknown ones as None.
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (shape or []))


def _spec(arg: Any) -> TensorSpec | None:
    datatype = ONNX_TO_OIP.get(arg.type)
    if datatype is None:
        return None
    return TensorSpec(arg.name, datatype, _dims(arg.shape), OIP_TO_NUMPY[datatype])


class ProviderMissingError(Exception):
    """The pod asked for CUDA and cannot have it: serving on CPU while holding a GPU would be
    slow and waste the GPU, so the server stays unready and says why."""


def choose_providers(requested: str, available: list[str]) -> list[str]:
    """CUDA (with CPU for the operators CUDA lacks) when asked for; ProviderMissingError when
    this onnxruntime has no CUDA provider (the CPU image on a GPU tier)."""
    if requested != "cuda":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in available:
        raise ProviderMissingError(
            "the GPU tier asks for CUDA but this onnxruntime has no CUDAExecutionProvider "
            f"(available: {', '.join(available) or 'none'}): run the GPU image "
            "(serving-image/Dockerfile with ONNXRUNTIME=onnxruntime-gpu; the operator's "
            "MODELROLLOUT_SERVING_IMAGE_GPU)"
        )
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def _preload_cuda() -> None:
    """onnxruntime-gpu finds the CUDA and cuDNN libraries of the nvidia-* wheels only once
    preloaded (onnxruntime 1.21+); older builds rely on the system's libraries."""
    preload = getattr(ort, "preload_dlls", None)
    if callable(preload):
        try:
            preload()
        except Exception as exc:  # a missing library shows again when the session starts
            log.warning("preloading the CUDA libraries failed: %s", exc)


class Runtime:
    """One onnxruntime session. ``run`` blocks: callers keep it off the event loop, unless a run
    is so short that the hop to a thread costs more (``time_run``)."""

    def __init__(self, path: Path, *, threads: int = 1, provider: str = "cpu") -> None:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # Spinning workers burn a CPU-limited pod's quota while idle and get it throttled.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = choose_providers(provider, ort.get_available_providers())
        if provider == "cuda":
            _preload_cuda()
        self.session = ort.InferenceSession(str(path), opts, providers=providers)
        self.provider: str = self.session.get_providers()[0]
        if provider == "cuda" and self.provider != "CUDAExecutionProvider":
            # The provider exists but could not start (no driver, no device visible).
            raise ProviderMissingError(
                "the GPU tier asks for CUDA but onnxruntime could not start it (no GPU visible "
                "to the pod, or no driver): it fell back to "
                f"{self.provider}"
            )

        inputs: list[TensorSpec] = []
        for arg in self.session.get_inputs():
            spec = _spec(arg)
            if spec is None:
                raise UnsupportedModelError(f"input {arg.name!r} has unsupported type {arg.type}")
            inputs.append(spec)
        outputs: list[TensorSpec] = []
        for arg in self.session.get_outputs():
            spec = _spec(arg)
            if spec is None:
                # Non-tensor outputs (sequences, maps) cannot be expressed in OIP: hide them.
                log.warning("output %r of type %s is not served", arg.name, arg.type)
                continue
            outputs.append(spec)
        if not outputs:
            raise UnsupportedModelError("the model has no tensor outputs")
        self.inputs: dict[str, TensorSpec] = {s.name: s for s in inputs}
        self.outputs: dict[str, TensorSpec] = {s.name: s for s in outputs}
        self._output_names = [s.name for s in outputs]
        # The session's own binding, beneath InferenceSession.run: the wrapper re-checks what
        # the decoders already checked (every input given, no foreign OrtValues) and costs 4-5 us
        # a run on a small model. CUDA keeps the wrapper for its fallback to CPU on EP failure.
        inner = getattr(self.session, "_sess", None)
        self._run = (
            inner.run
            if inner is not None and self.provider == "CPUExecutionProvider"
            else self._run_wrapped
        )
        # Batching concatenates along axis 0, which is only sound when every tensor has it.
        self.batchable = all(len(s.shape) >= 1 and s.shape[0] == -1 for s in (*inputs, *outputs))

    def run(self, feeds: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        results = self._run(self._output_names, feeds, None)
        return dict(zip(self._output_names, results, strict=True))

    def _run_wrapped(
        self, names: list[str], feeds: dict[str, np.ndarray[Any, Any]], options: None
    ) -> list[Any]:
        return self.session.run(names, feeds, options)  # type: ignore[no-any-return]

    def time_run(self, runs: int = 20, enough_s: float = 0.005) -> float | None:
        """Median seconds of a run on zeros, one row per dynamic axis; None if it cannot run.

        Warms the session up as a side effect (the first run allocates). A run slower than
        ``enough_s`` after the first ends the timing: a big model need not run 20 times.
        """
        feeds = {
            s.name: np.zeros(tuple(1 if d == -1 else d for d in s.shape), dtype=s.dtype)
            if s.datatype != "BYTES"
            else np.full(tuple(1 if d == -1 else d for d in s.shape), "", dtype=object)
            for s in self.inputs.values()
        }
        times = []
        try:
            self.run(feeds)
            for _ in range(runs):
                started = time.perf_counter()
                self.run(feeds)
                times.append(time.perf_counter() - started)
                if times[-1] > enough_s:
                    return times[-1]
        except Exception as exc:  # zeros are not valid input for every model
            log.info("no timing run on zeros: %s", str(exc).splitlines()[0][:200])
            return None
        return sorted(times)[len(times) // 2]
