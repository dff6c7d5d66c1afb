"""The REST fast path (restfast.py) answers every body exactly as the general path does.

Each body is decoded twice: by ``decode_infer_request`` alone (the general path) and by
``RestCodec`` (fast path first). Both must raise the same error, or both return the same
request. A fast path that skipped a check would accept a body the general path refuses, and
fail here. Valid common bodies must take the fast path (else it would be dead code), and its
answers must be the general encoder's, byte for byte.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pytest

from modelserver.datatypes import OIP_TO_NUMPY
from modelserver.errors import ServingError
from modelserver.restcodec import decode_infer_request, encode_infer_response
from modelserver.restfast import RestCodec
from modelserver.runtime import TensorSpec
from modelserver.tensors import InferRequest, Limits

LIMITS = Limits(max_elements=1000, max_memory=400, max_json_bytes=20_000)


def _spec(name: str, datatype: str, shape: tuple[int, ...]) -> TensorSpec:
    return TensorSpec(name, datatype, shape, OIP_TO_NUMPY[datatype])


OUTPUTS = {"y": _spec("y", "FP32", (-1, 2)), "k": _spec("k", "INT64", (-1,))}
MODELS: dict[str, dict[str, TensorSpec]] = {
    "float": {"x": _spec("x", "FP32", (-1, 4))},
    "fixed": {"x": _spec("x", "FP64", (2, -1))},
    "half": {"x": _spec("x", "FP16", (-1, 4))},
    "int": {"x": _spec("x", "INT32", (-1, 3))},
    "bool": {"x": _spec("x", "BOOL", (2,))},
    "two": {"x": _spec("x", "FP32", (-1, 4)), "ids": _spec("ids", "INT64", (-1, 2))},
    "bytes": {"x": _spec("x", "BYTES", (-1,))},
}


def _x(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "x", "datatype": "FP32", "shape": [1, 4]}
    base["data"] = [0.5, -1.25, 3.0, 1e-3]
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def _ids(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "ids", "datatype": "INT64", "shape": [1, 2], "data": [3, 4]}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def _doc(*inputs: Any, **top: Any) -> bytes:
    # The standard library's encoder: it writes integers past 64 bits, which orjson refuses.
    return json.dumps({"inputs": list(inputs), **top}).encode()


# (model, body, takes the fast path): valid bodies of the common shape.
VALID: list[tuple[str, bytes]] = [
    ("float", _doc(_x())),
    ("float", _doc(_x(), id="req-1")),
    ("float", _doc(_x(shape=[2, 4], data=[[1.5, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]))),
    ("float", _doc(_x(data=[1.5, 2, 3, True]))),  # mixed with a float: numpy makes floats
    ("float", _doc(_x(data=[2**70, 1.0, 2.0, 3.0]))),  # orjson reads past-64-bit ints as floats
    ("fixed", _doc(_x(datatype="FP64", shape=[2, 1], data=[1.0, 2.0]))),
    ("half", _doc(_x(datatype="FP16", data=[0.5, 1.0, 7000.0, -2.0]))),
    ("int", _doc(_x(datatype="INT32", shape=[1, 3], data=[1, -2, 2**31 - 1]))),
    ("bool", _doc(_x(datatype="BOOL", shape=[2], data=[True, False]))),
    ("two", _doc(_x(), _ids())),
    ("two", _doc(_ids(), _x())),
]

MALFORMED: list[tuple[str, bytes]] = [
    # JSON itself
    ("float", b"{"),
    (
        "float",
        b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], '
        b'"data": [NaN, 1.0, 2.0, 3.0]}]}',
    ),
    (
        "float",
        b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], '
        b'"data": [Infinity, 1.0, 2.0, 3.0]}]}',
    ),
    (
        "float",
        b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], '
        b'"data": [1e400, 1.0, 2.0, 3.0]}]}',
    ),
    ("float", b"[1, 2]"),
    ("float", b'"inputs"'),
    ("float", orjson.dumps({"inputs": [_x()], "pad": "x" * 20_000})),  # JSON over the limit
    # the document
    ("float", _doc()),
    ("float", orjson.dumps({"inputs": {"x": 1}})),
    ("float", orjson.dumps({"outputs": []})),
    ("float", _doc(3)),
    ("float", _doc(_x(), id=5)),
    ("float", _doc(_x(), parameters=5)),
    ("float", _doc(_x(), parameters={"binary_data_output": "yes"})),
    ("float", _doc(_x(), outputs=5)),
    ("float", _doc(_x(), outputs=[{"name": "nope"}])),
    ("float", _doc(_x(), outputs=[{"name": "y", "parameters": {"binary_data": 1}}])),
    # names
    ("float", _doc(_x(name=...))),
    ("float", _doc(_x(name=["x"]))),
    ("float", _doc(_x(name="colour"))),
    ("float", _doc(_x(), _x())),
    ("two", _doc(_x())),
    ("two", _doc(_x(), _x())),
    ("two", _doc(_x(), _ids(), _x())),
    # datatypes
    ("float", _doc(_x(datatype="FP64"))),
    ("float", _doc(_x(datatype="FP8"))),
    ("float", _doc(_x(datatype=32))),
    ("float", _doc(_x(datatype=...))),
    # shapes
    ("float", _doc(_x(shape=[1, 5]))),
    ("float", _doc(_x(shape=[4]))),
    ("float", _doc(_x(shape=[1, 4, 1]))),
    ("float", _doc(_x(shape=[1.0, 4]))),
    ("float", _doc(_x(shape=[1, 4.0]))),
    ("float", _doc(_x(shape=[True, 4]))),
    ("float", _doc(_x(shape=[-1, 4]))),
    ("float", _doc(_x(shape=[1, "4"]))),
    ("float", _doc(_x(shape="1,4"))),
    ("float", _doc(_x(shape=...))),
    ("float", _doc(_x(shape=[2, 4]))),  # 4 elements for 8
    ("fixed", _doc(_x(datatype="FP64", shape=[3, 1], data=[1.0, 2.0, 3.0]))),
    ("fixed", _doc(_x(datatype="FP64", shape=[2, -1], data=[1.0, 2.0]))),
    # limits: 300 elements of the 1000 allowed, but 1200 bytes of the 400 allowed
    ("float", _doc(_x(shape=[75, 4], data=[0.5] * 300))),
    ("float", _doc(_x(shape=[300, 4], data=[0.5] * 1200))),  # over max_elements too
    ("two", _doc(_x(shape=[20, 4], data=[0.5] * 80), _ids(shape=[20, 2], data=[1] * 40))),
    # data
    ("float", _doc(_x(data=...))),
    ("float", _doc(_x(data="0.5 1 2 3"))),
    ("float", _doc(_x(data={"0": 1.0}))),
    ("float", _doc(_x(data=[0.5, "1.0", 2.0, 3.0]))),
    ("float", _doc(_x(data=["0.5", "1.0", "2.0", "3.0"]))),
    ("float", _doc(_x(data=[0.5, None, 2.0, 3.0]))),
    ("float", _doc(_x(data=[True, False, True, False]))),
    ("float", _doc(_x(data=[0.5, 1.0, 2.0]))),
    ("float", _doc(_x(data=[0.5, 1.0, 2.0, 3.0, 4.0]))),
    ("float", _doc(_x(data=[[0.5, 1.0], [2.0]]))),
    ("float", _doc(_x(data=[[0.5, 1.0, 2.0, 3.0]], shape=[2, 2]))),
    ("float", _doc(_x(data=[0.5, [1.0], 2.0, 3.0]))),
    ("float", _doc(_x(data=[0.5, {"a": 1}, 2.0, 3.0]))),
    ("float", _doc(_x(parameters={"binary_data_size": 16}))),
    ("float", _doc(_x(parameters=[1]))),
    ("int", _doc(_x(datatype="INT32", shape=[1, 3], data=[1, 2, 2**31]))),
    ("int", _doc(_x(datatype="INT32", shape=[1, 3], data=[1.5, 2.0, 3.0]))),
    ("int", _doc(_x(datatype="INT32", shape=[1, 3], data=[True, False, True]))),
    ("int", _doc(_x(datatype="INT32", shape=[1, 3], data=[1, 2, 2**64]))),
    ("bool", _doc(_x(datatype="BOOL", shape=[2], data=[1, 0]))),
    ("bool", _doc(_x(datatype="BOOL", shape=[2], data=[0.0, 1.0]))),
    ("bytes", _doc(_x(datatype="BYTES", shape=[2], data=["a", 1]))),
]

# Valid, but not the common shape: the general path decodes them (the fast path declines).
UNCOMMON: list[tuple[str, bytes]] = [
    ("float", _doc(_x(), parameters={})),
    ("float", _doc(_x(parameters={}))),
    ("float", _doc(_x(data=[1, 2, 3, 4]))),  # integers for a float input
    ("float", _doc(_x(shape=[0, 4], data=[]))),
    ("float", _doc(_x(), parameters={"binary_data_output": True})),
    ("float", _doc(_x(), outputs=[{"name": "y"}])),
    ("float", _doc(_x(parameters={"unused": 1}))),
    ("int", _doc(_x(datatype="INT32", shape=[1, 3], data=[1.0, 2.0, 3.0]))),
    ("bytes", _doc(_x(datatype="BYTES", shape=[2], data=["a", "b"]))),
]


def _codec(model: str) -> RestCodec:
    return RestCodec(MODELS[model], OUTPUTS, LIMITS, model_name="m", model_version="1")


def _outcome(decode: Any) -> tuple[str, Any]:
    try:
        request: InferRequest = decode()
    except ServingError as exc:
        return type(exc).__name__, exc.message
    arrays = {n: (a.dtype.str, a.shape, a.tolist()) for n, a in request.inputs.items()}
    outputs = [(o.name, o.binary) for o in request.outputs]
    return "ok", (request.id, arrays, outputs)


def _both(model: str, body: bytes) -> tuple[tuple[str, Any], tuple[str, Any]]:
    general = _outcome(lambda: decode_infer_request(body, None, MODELS[model], OUTPUTS, LIMITS))
    fast = _outcome(lambda: _codec(model).decode(body, None))
    return general, fast


@pytest.mark.parametrize(("model", "body"), VALID + MALFORMED + UNCOMMON)
def test_fast_path_answers_as_the_general_path(model: str, body: bytes) -> None:
    general, fast = _both(model, body)
    assert fast == general


@pytest.mark.parametrize(("model", "body"), MALFORMED)
def test_malformed_bodies_are_refused(model: str, body: bytes) -> None:
    kind, message = _both(model, body)[1]
    assert kind in ("InvalidRequestError", "TooLargeError"), message


@pytest.mark.parametrize(("model", "body"), VALID)
def test_common_bodies_take_the_fast_path(model: str, body: bytes) -> None:
    assert _codec(model).decode_fast(orjson.loads(body)) is not None


@pytest.mark.parametrize(("model", "body"), MALFORMED + UNCOMMON)
def test_other_bodies_take_the_general_path(model: str, body: bytes) -> None:
    if len(body) > LIMITS.max_json_bytes:
        return  # refused before it is parsed
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return
    assert _codec(model).decode_fast(doc) is None


@pytest.mark.parametrize("req_id", [None, "abc"])
def test_fast_answer_is_the_general_encoders_byte_for_byte(req_id: str | None) -> None:
    codec = _codec("float")
    request = codec.decode(_doc(_x(), **({"id": req_id} if req_id else {})), None)
    wide = np.arange(12, dtype=np.float32).reshape(6, 2)
    results: dict[str, np.ndarray[Any, Any]] = {
        "y": wide[::3],  # not C-contiguous: the fast encoder must flatten it all the same
        "k": np.array([7, -1], dtype=np.int64),
    }
    fast, fast_length = codec.encode(request, results)
    general, general_length = encode_infer_response(
        model_name="m", model_version="1", request=request, results=results
    )
    assert fast_length is None
    assert general_length is None
    assert fast == general
    assert orjson.loads(fast)["outputs"][0]["data"] == [0.0, 1.0, 6.0, 7.0]
