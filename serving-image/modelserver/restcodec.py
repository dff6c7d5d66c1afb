"""The REST body of an inference request and response: JSON plus the binary tensor extension.

With ``Inference-Header-Content-Length`` the JSON header is followed by raw tensors, each input
marking its byte count with ``"parameters": {"binary_data_size": n}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from .batching import Arrays
from .datatypes import ALL_OIP_DATATYPES, numpy_to_oip
from .errors import InvalidRequestError, TooLargeError
from .runtime import TensorSpec
from .tensors import (
    InferRequest,
    Limits,
    MemoryBudget,
    RequestedOutput,
    check_shape,
    describe,
    from_list,
    from_raw,
)


def _bad(message: str) -> InvalidRequestError:
    return InvalidRequestError(message)


def decode_infer_request(
    body: bytes,
    header_length: int | None,
    inputs: Mapping[str, TensorSpec],
    outputs: Mapping[str, TensorSpec],
    limits: Limits,
) -> InferRequest:
    """Any request body, by the general path (``RestDecoder`` tries a fast one first)."""
    doc = parse_json_part(body, header_length, limits)
    return decode_document(doc, body, header_length, inputs, outputs, limits)


def parse_json_part(body: bytes, header_length: int | None, limits: Limits) -> Any:
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise _bad(
                f"Inference-Header-Content-Length {header_length} is outside the "
                f"{len(body)}-byte body"
            )
        header = body[:header_length]
    else:
        header = body
    if len(header) > limits.max_json_bytes:
        # Parsed JSON takes several times its size in memory; big tensors belong in binary.
        raise TooLargeError(
            f"JSON part of {len(header)} bytes is over the {limits.max_json_bytes}-byte limit "
            "(MODELSERVER_MAX_JSON_BYTES); send large tensors with the binary extension"
        )
    try:
        return orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"malformed JSON: {exc}") from None


def decode_document(
    doc: Any,
    body: bytes,
    header_length: int | None,
    inputs: Mapping[str, TensorSpec],
    outputs: Mapping[str, TensorSpec],
    limits: Limits,
) -> InferRequest:
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
    budget = MemoryBudget(limits.max_memory)
    arrays: Arrays = {}
    for raw in raw_inputs:
        if not isinstance(raw, dict):
            raise _bad("each input must be an object")
        name, spec, shape = _input_header(raw, inputs, arrays, limits, budget)
        binary_pos = _decode_input(raw, name, spec, shape, body, header_length, binary_pos, arrays)
    if binary_pos != len(body):
        raise _bad(f"{len(body) - binary_pos} bytes of binary data belong to no input")
    missing = [n for n in inputs if n not in arrays]
    if missing:
        raise _bad(f"missing input '{missing[0]}'; the model needs {list(inputs)}")
    return InferRequest(req_id, arrays, _requested_outputs(doc, params, outputs))


def _input_header(
    raw: dict[str, Any],
    inputs: Mapping[str, TensorSpec],
    seen: Arrays,
    limits: Limits,
    budget: MemoryBudget,
) -> tuple[str, TensorSpec, tuple[int, ...]]:
    name = raw.get("name")
    if not isinstance(name, str):
        raise _bad("each input needs a string 'name'")
    spec = inputs.get(name)
    if spec is None:
        raise _bad(f"unknown input '{name[:200]}'; the model takes {sorted(inputs)}")
    if name in seen:
        raise _bad(f"input '{name}' is given more than once")
    datatype = raw.get("datatype")
    if datatype != spec.datatype:
        if not isinstance(datatype, str):
            raise _bad(f"input '{name}': datatype must be a string, got {describe(datatype)}")
        if datatype not in ALL_OIP_DATATYPES:
            raise _bad(f"input '{name}': unknown datatype {datatype[:50]!r}")
        raise _bad(
            f"input '{name}': datatype {datatype} does not match the model's {spec.datatype}"
        )
    shape = check_shape(
        name, raw.get("shape"), spec, max_elements=limits.max_elements, budget=budget
    )
    return name, spec, shape


def _decode_input(
    raw: dict[str, Any],
    name: str,
    spec: TensorSpec,
    shape: tuple[int, ...],
    body: bytes,
    header_length: int | None,
    binary_pos: int,
    arrays: Arrays,
) -> int:
    """Decode one input into ``arrays``; return where the next binary input starts."""
    in_params = raw.get("parameters") or {}
    if not isinstance(in_params, dict):
        raise _bad(f"input '{name}': 'parameters' must be an object")
    size = in_params.get("binary_data_size")
    if size is None:
        if "data" not in raw:
            raise _bad(f"input '{name}': has no 'data' and no binary_data_size")
        arrays[name] = from_list(name, spec, raw["data"], shape)
        return binary_pos
    if header_length is None:
        raise _bad(
            f"input '{name}': binary_data_size given without Inference-Header-Content-Length"
        )
    if type(size) is not int or size < 0:
        raise _bad(f"input '{name}': binary_data_size must be a non-negative integer")
    if "data" in raw:
        raise _bad(f"input '{name}': has both 'data' and binary_data_size")
    if binary_pos + size > len(body):
        raise _bad(f"input '{name}': binary_data_size {size} overruns the request body")
    arrays[name] = from_raw(name, spec, body, binary_pos, size, shape)
    return binary_pos + size


def _requested_outputs(
    doc: dict[str, Any], params: dict[str, Any], outputs: Mapping[str, TensorSpec]
) -> list[RequestedOutput]:
    binary_all = params.get("binary_data_output", False)
    if not isinstance(binary_all, bool):
        raise _bad("parameter 'binary_data_output' must be a boolean")
    raw_outputs = doc.get("outputs")
    if raw_outputs is None:
        return [RequestedOutput(n, binary_all) for n in outputs]
    if not isinstance(raw_outputs, list):
        raise _bad("'outputs' must be a list")
    requested: list[RequestedOutput] = []
    for raw in raw_outputs:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise _bad("each requested output needs a string 'name'")
        name = raw["name"]
        if name not in outputs:
            raise _bad(f"unknown output '{name[:200]}'; the model has {list(outputs)}")
        out_params = raw.get("parameters") or {}
        if not isinstance(out_params, dict):
            raise _bad(f"output '{name}': 'parameters' must be an object")
        binary = out_params.get("binary_data", binary_all)
        if not isinstance(binary, bool):
            raise _bad(f"output '{name}': parameter 'binary_data' must be a boolean")
        requested.append(RequestedOutput(name, binary))
    return requested


# --- encoding -----------------------------------------------------------------------------------


def _json_data(arr: np.ndarray[Any, Any], datatype: str) -> Any:
    if datatype == "BYTES":
        return [x.decode(errors="replace") if isinstance(x, bytes) else str(x) for x in arr.flat]
    if datatype == "FP16":
        arr = arr.astype(np.float32)  # orjson's numpy support has no float16
    return np.ascontiguousarray(arr).reshape(-1)


def binary_data(arr: np.ndarray[Any, Any], datatype: str) -> bytes:
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
            blob = binary_data(arr, datatype)
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
