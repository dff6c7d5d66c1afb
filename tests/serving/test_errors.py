"""Bad requests get a 400 (or 413) naming the tensor and the fault, and serving continues."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import pytest_asyncio

from .conftest import Models, Served, ServeFactory


def _input(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "features",
        "datatype": "FP32",
        "shape": [1, 16],
        "data": [0.5] * 16,
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


BAD_JSON_BODIES: list[tuple[str, Any, str]] = [
    ("not an object", [1, 2], "must be a JSON object"),
    ("no inputs", {"outputs": []}, "'inputs' must be a non-empty list"),
    ("empty inputs", {"inputs": []}, "'inputs' must be a non-empty list"),
    ("input not object", {"inputs": [3]}, "each input must be an object"),
    ("nameless input", {"inputs": [_input(name=None)]}, "string 'name'"),
    ("unknown input", {"inputs": [_input(name="colour")]}, "unknown input 'colour'"),
    ("duplicate input", {"inputs": [_input(), _input()]}, "'features' is given more than once"),
    ("wrong datatype", {"inputs": [_input(datatype="INT64")]}, "datatype INT64 does not match"),
    ("unknown datatype", {"inputs": [_input(datatype="FP8")]}, "unknown datatype 'FP8'"),
    ("wrong rank", {"inputs": [_input(shape=[16])]}, "has rank 1, the model expects rank 2"),
    ("wrong fixed dim", {"inputs": [_input(shape=[2, 8])]}, "does not match the model's [-1, 16]"),
    ("negative dim", {"inputs": [_input(shape=[-1, 16])]}, "non-negative integers"),
    ("float dim", {"inputs": [_input(shape=[1.0, 16])]}, "non-negative integers"),
    ("shape missing", {"inputs": [_input(shape=None)]}, "non-negative integers"),
    ("huge shape", {"inputs": [_input(shape=[10**12, 16])]}, "is too large"),
    ("too few elements", {"inputs": [_input(data=[1.0] * 15)]}, "15 data elements do not match"),
    (
        "too many elements",
        {"inputs": [_input(shape=[2, 16], data=[1.0] * 16)]},
        "16 data elements do not match shape [2, 16] (32 elements)",
    ),
    ("ragged data", {"inputs": [_input(data=[[1.0] * 16, [1.0]])]}, "ragged or has mixed types"),
    ("strings for FP32", {"inputs": [_input(data=["a"] * 16)]}, "FP32 data cannot hold strings"),
    ("bools for FP32", {"inputs": [_input(data=[True] * 16)]}, "FP32 data cannot hold booleans"),
    ("null data", {"inputs": [_input(data=[None] * 16)]}, "cannot hold mixed"),
    ("scalar data", {"inputs": [_input(data=3.0)]}, "data must be a list"),
    ("no data", {"inputs": [_input(data=None)]}, "has no 'data' and no binary_data_size"),
    (
        "binary without header",
        {"inputs": [_input(data=None, parameters={"binary_data_size": 64})]},
        "without Inference-Header-Content-Length",
    ),
    ("unknown output", {"inputs": [_input()], "outputs": [{"name": "x"}]}, "unknown output 'x'"),
    ("bad id", {"id": 5, "inputs": [_input()]}, "'id' must be a string"),
    (
        "bad binary flag",
        {"inputs": [_input()], "parameters": {"binary_data_output": "yes"}},
        "'binary_data_output' must be a boolean",
    ),
]


@pytest_asyncio.fixture(loop_scope="function")
async def mlp_server(serve: ServeFactory, models: Models) -> Served:
    return await serve(model_uri=str(models.mlp), max_body_bytes=64 * 1024)


async def _still_serves(served: Served) -> None:
    r = await served.client.post(served.infer_url(), json={"inputs": [_input()]})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("case", "body", "message"), BAD_JSON_BODIES, ids=[c[0] for c in BAD_JSON_BODIES]
)
async def test_bad_json_request(mlp_server: Served, case: str, body: Any, message: str) -> None:
    r = await mlp_server.client.post(mlp_server.infer_url(), content=orjson.dumps(body))
    assert r.status_code == 400, case
    error = r.json()["error"]
    assert message in error, error
    assert "Traceback" not in error
    await _still_serves(mlp_server)


def test_missing_required_input(models: Models) -> None:
    from modelserver.errors import InvalidRequestError
    from modelserver.restcodec import decode_infer_request
    from modelserver.runtime import Runtime
    from modelserver.tensors import Limits

    rt = Runtime(models.mlp)
    limits = Limits(max_elements=1000, max_memory=1 << 20, max_json_bytes=1 << 20)
    two_inputs = {**rt.inputs, "extra": rt.inputs["features"]}
    body = orjson.dumps({"inputs": [_input()]})
    with pytest.raises(InvalidRequestError, match="missing input 'extra'"):
        decode_infer_request(body, None, two_inputs, rt.outputs, limits)


@pytest.mark.parametrize(
    "raw",
    [b"{", b"", b"\xff\xfe", b'{"inputs": [}', b"null"],
    ids=["truncated", "empty", "not utf8", "syntax", "null"],
)
async def test_malformed_json(mlp_server: Served, raw: bytes) -> None:
    r = await mlp_server.client.post(mlp_server.infer_url(), content=raw)
    assert r.status_code == 400
    error = r.json()["error"]
    assert "malformed JSON" in error or "must be a JSON object" in error
    await _still_serves(mlp_server)


async def test_int_out_of_range_and_float_for_int(serve: ServeFactory, models: Models) -> None:
    s = await serve(model_uri=str(models.identity["UINT8"]), model_name="u8")
    for data, message in (
        ([300], "out of range for UINT8"),
        ([-1], "out of range for UINT8"),
        ([1.5], "UINT8 data cannot hold float64 values"),
    ):
        body = {"inputs": [{"name": "value", "datatype": "UINT8", "shape": [1, 1], "data": data}]}
        r = await s.client.post(s.infer_url(), json=body)
        assert r.status_code == 400
        assert message in r.json()["error"]


def _binary_request(
    size: int, payload: bytes, header_length: int | None = None
) -> tuple[bytes, dict[str, str]]:
    header = orjson.dumps({"inputs": [_input(data=None, parameters={"binary_data_size": size})]})
    length = len(header) if header_length is None else header_length
    return header + payload, {"Inference-Header-Content-Length": str(length)}


@pytest.mark.parametrize(
    ("size", "payload", "header_length", "message"),
    [
        (
            60,
            b"\0" * 60,
            None,
            "binary_data_size 60 does not match shape [1, 16] of FP32 (64 bytes)",
        ),
        (64, b"\0" * 32, None, "binary_data_size 64 overruns the request body"),
        (64, b"\0" * 80, None, "16 bytes of binary data belong to no input"),
        (64, b"\0" * 64, 10**6, "is outside the"),
        (64, b"\0" * 64, 3, "malformed JSON"),
    ],
    ids=["size vs shape", "overrun", "leftover", "header past end", "header cut"],
)
async def test_bad_binary_request(
    mlp_server: Served, size: int, payload: bytes, header_length: int | None, message: str
) -> None:
    content, headers = _binary_request(size, payload, header_length)
    r = await mlp_server.client.post(mlp_server.infer_url(), content=content, headers=headers)
    assert r.status_code == 400
    assert message in r.json()["error"]


async def test_header_length_not_integer(mlp_server: Served) -> None:
    content, _ = _binary_request(64, b"\0" * 64)
    r = await mlp_server.client.post(
        mlp_server.infer_url(), content=content, headers={"Inference-Header-Content-Length": "x"}
    )
    assert r.status_code == 400
    assert "must be an integer" in r.json()["error"]


async def test_body_too_large(mlp_server: Served) -> None:
    big = orjson.dumps({"inputs": [_input(shape=[5000, 16], data=[0.25] * 80_000)]})
    assert len(big) > 64 * 1024
    r = await mlp_server.client.post(mlp_server.infer_url(), content=big)
    assert r.status_code == 413
    assert "64-byte limit" not in r.json()["error"]
    assert "65536-byte limit" in r.json()["error"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while reading
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    r = await mlp_server.client.post(mlp_server.infer_url(), content=chunks())
    assert r.status_code == 413
    await _still_serves(mlp_server)


async def test_runtime_rejection_is_a_clean_error(serve: ServeFactory, models: Models) -> None:
    # An empty batch passes validation; onnxruntime either runs it or refuses it, never a trace.
    s = await serve(model_uri=str(models.mlp))
    body = {"inputs": [_input(shape=[0, 16], data=[])]}
    r = await s.client.post(s.infer_url(), json=body)
    assert r.status_code in (200, 400), r.text
    if r.status_code == 200:
        assert r.json()["outputs"][0]["shape"] == [0, 8]
    else:
        assert "Traceback" not in r.json()["error"]
