"""The peer: KServe's Python ModelServer wrapping the same onnxruntime session.

Runs in its own virtualenv (bench/.venv-kserve) because kserve pins its own dependencies.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer


class OnnxModel(Model):  # type: ignore[misc]
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.session: ort.InferenceSession | None = None
        self.load()

    def load(self) -> bool:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(self.path, opts, providers=["CPUExecutionProvider"])
        self.ready = True
        return True

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> Any:
        assert self.session is not None
        feeds = {inp.name: inp.as_numpy() for inp in payload.inputs}
        names = [o.name for o in self.session.get_outputs()]
        outputs = []
        for name, arr in zip(names, self.session.run(names, feeds), strict=True):
            out = InferOutput(name=name, shape=list(arr.shape), datatype="FP32")
            out.set_data_from_numpy(np.asarray(arr, dtype=np.float32), binary_data=False)
            outputs.append(out)
        return InferResponse(
            response_id=payload.id or "", model_name=self.name, infer_outputs=outputs
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--served-name", required=True)
    parser.add_argument("--onnx-path", required=True)
    parser.add_argument("--listen-port", type=int, required=True)
    args, _ = parser.parse_known_args()
    logging.getLogger().setLevel(logging.WARNING)
    server = ModelServer(
        http_port=args.listen_port,
        workers=1,
        enable_grpc=False,
        enable_latency_logging=False,
        access_log_format=None,
    )
    server.start([OnnxModel(args.served_name, args.onnx_path)])


if __name__ == "__main__":
    main()
