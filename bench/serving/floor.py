"""The transport floor: a bare uvicorn + orjson ASGI app doing only decode, run and encode.

Nothing a server needs beyond that (validation, metrics, auth, limits, readiness of a loading
model, a thread for inference): what is left is the least any Python server on this stack can
cost per request, the reference the model server is measured against.

    python -m bench.serving.floor MODEL.onnx PORT
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import uvicorn

Message = MutableMapping[str, Any]


def app_for(path: str) -> Callable[..., Awaitable[None]]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    headers = [(b"content-type", b"application/json")]

    async def app(
        scope: Message,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] == "GET":  # readiness, for the benchmark's start-up check
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b'{"ready": true}'})
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        doc = orjson.loads(body)
        feeds = {
            t["name"]: np.asarray(t["data"], dtype=np.float32).reshape(t["shape"])
            for t in doc["inputs"]
        }
        results = session.run(names, feeds)
        out = orjson.dumps(
            {
                "model_name": "floor",
                "outputs": [
                    {"name": n, "datatype": "FP32", "shape": r.shape, "data": r.reshape(-1)}
                    for n, r in zip(names, results, strict=True)
                ],
            },
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": out})

    return app


def main() -> None:
    path, port = sys.argv[1], int(sys.argv[2])
    uvicorn.run(
        app_for(path),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        loop="uvloop",
        http="httptools",
    )


if __name__ == "__main__":
    main()
