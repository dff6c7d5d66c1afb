"""The peer: Seldon's MLServer running the same onnxruntime session as a custom runtime.

Runs in its own virtualenv (bench/.venv-mlserver, with httptools: MLServer's best
configuration; as installed from PyPI it runs on h11). Copied next to model-settings.json, which
names it as the implementation.
"""

from __future__ import annotations

from typing import Any

import onnxruntime as ort
from mlserver import MLModel  # type: ignore[import-not-found]
from mlserver.codecs import NumpyCodec  # type: ignore[import-not-found]
from mlserver.types import InferenceRequest, InferenceResponse  # type: ignore[import-not-found]


class OnnxModel(MLModel):  # type: ignore[misc]
    async def load(self) -> bool:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        uri = self.settings.parameters.uri
        self.session = ort.InferenceSession(uri, opts, providers=["CPUExecutionProvider"])
        self.names = [o.name for o in self.session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> Any:
        feeds = {inp.name: NumpyCodec.decode_input(inp) for inp in payload.inputs}
        results = self.session.run(self.names, feeds)
        return InferenceResponse(
            model_name=self.name,
            id=payload.id,
            outputs=[
                NumpyCodec.encode_output(name, arr)
                for name, arr in zip(self.names, results, strict=True)
            ],
        )
