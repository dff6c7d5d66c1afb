"""The gRPC ``ModelInferRequest`` and ``ModelInferResponse``: typed contents and raw bytes.

Inputs arrive either all in ``raw_input_contents`` (flat little-endian bytes, BYTES elements
with a 4-byte length prefix, as REST's binary extension) or each in the typed ``contents`` field
for its datatype. Outputs go back raw when the inputs came raw (as Triton's clients send them),
typed otherwise; FP16 has no typed field, so an FP16 output makes the whole response raw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .batching import Arrays
from .datatypes import ALL_OIP_DATATYPES, numpy_to_oip
from .errors import InvalidRequestError
from .proto.grpc_predict_v2_pb2 import (
    InferTensorContents,
    ModelInferRequest,
    ModelInferResponse,
)
from .restcodec import binary_data
from .runtime import TensorSpec
from .tensors import InferRequest, Limits, MemoryBudget, RequestedOutput, check_shape, from_raw

# OIP datatype -> the InferTensorContents field that carries it.
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_ALL_FIELDS = sorted(set(CONTENTS_FIELD.values()))


def _bad(message: str) -> InvalidRequestError:
    return InvalidRequestError(message)


def decode_request(
    request: ModelInferRequest,
    inputs: Mapping[str, TensorSpec],
    outputs: Mapping[str, TensorSpec],
    limits: Limits,
) -> InferRequest:
    raw = request.raw_input_contents
    if not request.inputs:
        raise _bad("'inputs' must be a non-empty list")
    if raw and len(raw) != len(request.inputs):
        raise _bad(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; "
            "give one per input, in the order of 'inputs'"
        )
    budget = MemoryBudget(limits.max_memory)
    arrays: Arrays = {}
    for i, tensor in enumerate(request.inputs):
        name, spec, shape = _input_header(tensor, inputs, arrays, limits, budget)
        if raw:
            if tensor.HasField("contents"):
                raise _bad(f"input '{name}': has typed contents beside raw_input_contents")
            arrays[name] = from_raw(name, spec, raw[i], 0, len(raw[i]), shape)
        else:
            arrays[name] = _from_contents(name, spec, tensor.contents, shape)
    missing = [n for n in inputs if n not in arrays]
    if missing:
        raise _bad(f"missing input '{missing[0]}'; the model needs {list(inputs)}")
    return InferRequest(request.id or None, arrays, _requested(request, outputs, bool(raw)))


def _input_header(
    tensor: ModelInferRequest.InferInputTensor,
    inputs: Mapping[str, TensorSpec],
    seen: Arrays,
    limits: Limits,
    budget: MemoryBudget,
) -> tuple[str, TensorSpec, tuple[int, ...]]:
    name = tensor.name
    spec = inputs.get(name)
    if spec is None:
        raise _bad(f"unknown input '{name[:200]}'; the model takes {sorted(inputs)}")
    if name in seen:
        raise _bad(f"input '{name}' is given more than once")
    if tensor.datatype != spec.datatype:
        if tensor.datatype not in ALL_OIP_DATATYPES:
            raise _bad(f"input '{name}': unknown datatype {tensor.datatype[:50]!r}")
        raise _bad(
            f"input '{name}': datatype {tensor.datatype} does not match the model's {spec.datatype}"
        )
    shape = check_shape(
        name, list(tensor.shape), spec, max_elements=limits.max_elements, budget=budget
    )
    return name, spec, shape


def _from_contents(
    name: str, spec: TensorSpec, contents: InferTensorContents, shape: tuple[int, ...]
) -> np.ndarray[Any, Any]:
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    field = CONTENTS_FIELD.get(spec.datatype)
    if field is None:
        raise _bad(f"input '{name}': {spec.datatype} has no typed contents; send it raw")
    values: Sequence[Any] = getattr(contents, field)
    if len(values) != count:
        others = [f for f in _ALL_FIELDS if f != field and len(getattr(contents, f))]
        if not values and others:
            raise _bad(f"input '{name}': {spec.datatype} data goes in {field}, not {others[0]}")
        raise _bad(
            f"input '{name}': {len(values)} elements in {field} do not match shape "
            f"{list(shape)} ({count} elements)"
        )
    if spec.datatype == "BYTES":
        arr = np.empty(count, dtype=object)
        try:
            arr[:] = [v.decode() for v in values]
        except UnicodeDecodeError:
            raise _bad(f"input '{name}': BYTES element is not valid UTF-8") from None
        return arr.reshape(shape)
    wide = np.array(values)  # int64/uint64/float from the wire type
    if spec.dtype.kind in "iu" and spec.dtype.itemsize < wide.dtype.itemsize and wide.size:
        info = np.iinfo(spec.dtype)  # type: ignore[type-var]
        if int(wide.min()) < info.min or int(wide.max()) > info.max:
            raise _bad(f"input '{name}': values out of range for {spec.datatype}")
    return wide.astype(spec.dtype, copy=False).reshape(shape)


def _requested(
    request: ModelInferRequest, outputs: Mapping[str, TensorSpec], raw: bool
) -> list[RequestedOutput]:
    if not request.outputs:
        return [RequestedOutput(n, raw) for n in outputs]
    wanted: list[RequestedOutput] = []
    for out in request.outputs:
        if out.name not in outputs:
            raise _bad(f"unknown output '{out.name[:200]}'; the model has {list(outputs)}")
        wanted.append(RequestedOutput(out.name, raw))
    return wanted


def encode_response(
    *, model_name: str, model_version: str, request: InferRequest, results: Arrays
) -> ModelInferResponse:
    response = ModelInferResponse(model_name=model_name, model_version=model_version)
    if request.id is not None:
        response.id = request.id
    arrays = [results[w.name] for w in request.outputs]
    datatypes = [numpy_to_oip(a.dtype) for a in arrays]
    raw = any(w.binary for w in request.outputs) or "FP16" in datatypes
    for wanted, arr, datatype in zip(request.outputs, arrays, datatypes, strict=True):
        out = response.outputs.add(name=wanted.name, datatype=datatype, shape=arr.shape)
        if raw:
            response.raw_output_contents.append(binary_data(arr, datatype))
        elif datatype == "BYTES":
            out.contents.bytes_contents.extend(
                x if isinstance(x, bytes) else str(x).encode() for x in arr.flat
            )
        else:
            getattr(out.contents, CONTENTS_FIELD[datatype]).extend(arr.reshape(-1).tolist())
    return response
