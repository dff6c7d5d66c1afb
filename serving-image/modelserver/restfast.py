"""The REST codec of one loaded model: the common request shape on a fast path.

The common request is JSON alone: every input once, its data a list of numbers for a numeric
datatype (BOOL, integers, FP16/32/64), no parameters, every output wanted as JSON. The fast
path makes the general path's checks (restcodec.py) inline, against per-input facts looked up
once when the model loads, and gives up the moment a body is not plainly valid: the general
path then decodes it from the parsed document and alone raises errors, so a malformed body is
answered the same with or without the fast path (tests/serving/test_fastpath.py compares
them on many). The answer is encoded from per-output facts looked up once too, byte for byte
as the general encoder would.

Why it exists: on a small model the whole request costs a few hundred thousand instructions,
transport included, and the general path's function calls and checks were a sixth of that.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from .batching import Arrays
from .restcodec import decode_document, encode_infer_response, parse_json_part
from .runtime import TensorSpec
from .tensors import InferRequest, Limits, RequestedOutput


@dataclass(frozen=True, slots=True)
class _Input:
    """What the fast path checks an input against, looked up once."""

    spec: TensorSpec
    datatype: str
    rank: int
    dims: tuple[int, ...]  # -1 for any size
    int_types: list[type]  # [int] * rank: the shape's element types, compared at once
    tail: list[int] | None  # the fixed dims after a free first one, the usual batch shape
    tail_count: int
    itemsize: int
    dtype: np.dtype[Any]
    kind: str  # the dtype's kind: "f", "i", "u" or "b"
    lowest: int  # for integer inputs, the range of the values
    highest: int


def _input(spec: TensorSpec) -> _Input:
    dims = spec.shape
    tail = list(dims[1:]) if dims and dims[0] == -1 and -1 not in dims[1:] else None
    lowest, highest = 0, 0
    if spec.dtype.kind in "iu":
        info = np.iinfo(spec.dtype)  # type: ignore[type-var]
        lowest, highest = int(info.min), int(info.max)
    return _Input(
        spec=spec,
        datatype=spec.datatype,
        rank=len(dims),
        dims=dims,
        int_types=[int] * len(dims),
        tail=tail,
        tail_count=int(np.prod(tail)) if tail else 1,
        itemsize=spec.dtype.itemsize,
        dtype=spec.dtype,
        kind=spec.dtype.kind,
        lowest=lowest,
        highest=highest,
    )


_TOP_KEYS = {"inputs"}
_TOP_KEYS_ID = {"inputs", "id"}
_INPUT_KEYS = {"name", "datatype", "shape", "data"}


class RestCodec:
    """Decodes requests and encodes answers for one model; see the module docstring."""

    __slots__ = (
        "_all_outputs",
        "_fast",
        "_head",
        "_inputs",
        "_json_outputs",
        "_limits",
        "_outputs",
    )

    def __init__(
        self,
        inputs: Mapping[str, TensorSpec],
        outputs: Mapping[str, TensorSpec],
        limits: Limits,
        *,
        model_name: str,
        model_version: str,
    ) -> None:
        self._inputs = inputs
        self._outputs = outputs
        self._limits = limits
        numeric = bool(inputs) and all(s.dtype.kind in "biuf" for s in inputs.values())
        self._fast = {n: _input(s) for n, s in inputs.items()} if numeric else None
        self._all_outputs = tuple(RequestedOutput(n, False) for n in outputs)
        self._head = (model_name, model_version)
        # (name, datatype) of every output, when each goes into JSON as it is (FP16 and BYTES
        # are converted first: they take the general encoder).
        self._json_outputs = (
            tuple((n, s.datatype) for n, s in outputs.items())
            if all(s.datatype not in ("FP16", "BYTES") for s in outputs.values())
            else None
        )

    def decode(self, body: bytes, header_length: int | None) -> InferRequest:
        limits = self._limits
        if self._fast is None or header_length is not None or len(body) > limits.max_json_bytes:
            doc = parse_json_part(body, header_length, limits)
        else:
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError:
                doc = parse_json_part(body, header_length, limits)  # raises, saying what is wrong
            request = self.decode_fast(doc)
            if request is not None:
                return request
        return decode_document(doc, body, header_length, self._inputs, self._outputs, limits)

    def decode_fast(self, doc: Any) -> InferRequest | None:
        """The request, or None when the general path must decide (errors included)."""
        fast = self._fast
        if fast is None or type(doc) is not dict:
            return None
        keys = doc.keys()  # no parameters, no outputs named: compared as sets, at once
        if keys != _TOP_KEYS and keys != _TOP_KEYS_ID:
            return None
        req_id = doc.get("id")
        raw_inputs = doc["inputs"]
        if req_id is not None and type(req_id) is not str:
            return None
        if type(raw_inputs) is not list or len(raw_inputs) != len(fast):
            return None  # an input missing, unknown or given twice
        limits = self._limits
        memory = 0
        arrays: Arrays = {}
        for raw in raw_inputs:
            if type(raw) is not dict or raw.keys() != _INPUT_KEYS:
                return None  # parameters (binary data) or a field missing
            name = raw["name"]
            if type(name) is not str or name in arrays or name not in fast:
                return None
            want = fast[name]
            shape = raw["shape"]
            data = raw["data"]
            if raw["datatype"] != want.datatype or type(data) is not list:
                return None
            if type(shape) is not list or list(map(type, shape)) != want.int_types:
                return None  # not a list of plain ints of the model's rank (bool, float)
            tail = want.tail
            if tail is not None:  # (-1, fixed...), the usual batch shape: one comparison
                count = shape[0] * want.tail_count if shape[1:] == tail else -1
            else:
                count = _count(shape, want.dims)
            if count <= 0 or count > limits.max_elements:
                return None  # negative, mismatched, empty or too many
            memory += count * want.itemsize
            if memory > limits.max_memory:
                return None
            try:
                arr = np.asarray(data)
            except (ValueError, TypeError):
                return None  # ragged
            kind = arr.dtype.kind
            if arr.size != count or not (kind == want.kind == "f" or _fits(arr, kind, want)):
                return None
            arrays[name] = arr.astype(want.dtype, copy=False).reshape(shape)
        return InferRequest(req_id, arrays, self._all_outputs)

    def encode(self, request: InferRequest, results: Arrays) -> tuple[bytes, int | None]:
        """As ``encode_infer_response``; every output in JSON, from the fast path, directly."""
        name, version = self._head
        if request.outputs is not self._all_outputs or self._json_outputs is None:
            return encode_infer_response(
                model_name=name, model_version=version, request=request, results=results
            )
        outs = []
        for output, datatype in self._json_outputs:
            arr = results[output]
            # ravel: flat and C-ordered, as orjson needs (a copy only when it is not already)
            outs.append(
                {"name": output, "datatype": datatype, "shape": arr.shape, "data": arr.ravel()}
            )
        doc: dict[str, Any] = {"model_name": name, "model_version": version}
        if request.id is not None:
            doc["id"] = request.id
        doc["outputs"] = outs
        return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY), None


def _count(shape: list[int], dims: tuple[int, ...]) -> int:
    """Elements of a shape of ints that fits the model's dims, or -1."""
    count = 1
    for d, w in zip(shape, dims, strict=True):
        if d < 0 or (w != -1 and d != w):
            return -1
        count *= d
    return count


def _fits(arr: np.ndarray[Any, Any], kind: str, want: _Input) -> bool:
    """JSON numbers that ``tensors.from_list`` takes as they are: booleans for BOOL, integers
    in range for an integer input (floats for a float input are checked inline)."""
    if kind == "b":
        return want.kind == "b"
    if kind in "iu" and want.kind in "iu":
        return want.lowest <= int(arr.min()) and int(arr.max()) <= want.highest
    return False
