"""Every OIP datatype onnxruntime takes survives JSON and binary round trips unchanged."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from modelserver.datatypes import OIP_TO_NUMPY

from .conftest import Models, ServeFactory

DATATYPES = sorted(OIP_TO_NUMPY)


def sample(datatype: str) -> np.ndarray[Any, Any]:
    """A 2x3 array spanning the type's range (extremes included)."""
    if datatype == "BYTES":
        return np.array([["a", "", "ünïcode"], ["x" * 40, "0", "tab\tnew\nline"]], dtype=object)
    if datatype == "BOOL":
        return np.array([[True, False, True], [False, False, True]])
    dtype = OIP_TO_NUMPY[datatype]
    if dtype.kind in "iu":
        info = np.iinfo(dtype)  # type: ignore[type-var]
        return np.array([[info.min, info.max, 0], [1, 7, info.max - 1]], dtype=dtype)
    return np.array(
        [[-1.5, 0.0, 3.25], [1e-3, -2.0, 65504.0 if datatype == "FP16" else 1e30]], dtype=dtype
    )


def encode_bytes(arr: np.ndarray[Any, Any]) -> bytes:
    out = b""
    for item in arr.flat:
        raw = item.encode()
        out += len(raw).to_bytes(4, "little") + raw
    return out


def decode_bytes(blob: bytes) -> list[str]:
    items, pos = [], 0
    while pos < len(blob):
        n = int.from_bytes(blob[pos : pos + 4], "little")
        items.append(blob[pos + 4 : pos + 4 + n].decode())
        pos += 4 + n
    return items


@pytest.mark.parametrize("datatype", DATATYPES)
async def test_json_round_trip(serve: ServeFactory, models: Models, datatype: str) -> None:
    s = await serve(model_uri=str(models.identity[datatype]), model_name="echo")
    meta = (await s.client.get("/v2/models/echo")).json()
    assert meta["inputs"] == [{"name": "value", "datatype": datatype, "shape": [-1, -1]}]
    assert meta["outputs"] == [{"name": "echo", "datatype": datatype, "shape": [-1, -1]}]
    arr = sample(datatype)
    body = {
        "inputs": [{"name": "value", "datatype": datatype, "shape": [2, 3], "data": arr.tolist()}]
    }
    r = await s.client.post(s.infer_url(), content=orjson.dumps(body))
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert (out["datatype"], out["shape"]) == (datatype, [2, 3])
    if datatype == "BYTES":
        assert out["data"] == list(arr.flat)
    else:
        got = np.array(out["data"], dtype=OIP_TO_NUMPY[datatype]).reshape(2, 3)
        np.testing.assert_array_equal(got, arr)


@pytest.mark.parametrize("datatype", DATATYPES)
async def test_binary_round_trip(serve: ServeFactory, models: Models, datatype: str) -> None:
    s = await serve(model_uri=str(models.identity[datatype]), model_name="echo")
    arr = sample(datatype)
    blob = (
        encode_bytes(arr) if datatype == "BYTES" else arr.astype(OIP_TO_NUMPY[datatype]).tobytes()
    )
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "value",
                    "datatype": datatype,
                    "shape": [2, 3],
                    "parameters": {"binary_data_size": len(blob)},
                }
            ],
            "outputs": [{"name": "echo", "parameters": {"binary_data": True}}],
        }
    )
    r = await s.client.post(
        s.infer_url(),
        content=header + blob,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert r.status_code == 200, r.text
    length = int(r.headers["inference-header-content-length"])
    doc, out_blob = orjson.loads(r.content[:length]), r.content[length:]
    assert doc["outputs"][0]["parameters"]["binary_data_size"] == len(out_blob)
    if datatype == "BYTES":
        assert decode_bytes(out_blob) == list(arr.flat)
    else:
        got = np.frombuffer(out_blob, OIP_TO_NUMPY[datatype]).reshape(2, 3)
        np.testing.assert_array_equal(got, arr)


async def test_bytes_rejects_numbers(serve: ServeFactory, models: Models) -> None:
    s = await serve(model_uri=str(models.identity["BYTES"]), model_name="echo")
    body = {"inputs": [{"name": "value", "datatype": "BYTES", "shape": [1, 2], "data": ["a", 1]}]}
    r = await s.client.post(s.infer_url(), json=body)
    assert r.status_code == 400
    assert "input 'value': BYTES data must be strings, got int" in r.json()["error"]


async def test_bytes_binary_invalid_utf8(serve: ServeFactory, models: Models) -> None:
    s = await serve(model_uri=str(models.identity["BYTES"]), model_name="echo")
    blob = (2).to_bytes(4, "little") + b"\xff\xfe"
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "value",
                    "datatype": "BYTES",
                    "shape": [1, 1],
                    "parameters": {"binary_data_size": len(blob)},
                }
            ]
        }
    )
    r = await s.client.post(
        s.infer_url(),
        content=header + blob,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert r.status_code == 400
    assert "not valid UTF-8" in r.json()["error"]
