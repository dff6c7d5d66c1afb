"""Tensors as the Open Inference Protocol carries them, checked against the model's inputs.

Shared by every transport: REST's JSON and binary extension and gRPC's typed and raw contents
arrive as nested lists or raw little-endian bytes. Validation is hand-written rather than a
pydantic model: it runs on every request on the event loop, and each failure has to name the
tensor and say what is wrong with it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from .batching import Arrays
from .errors import InvalidRequestError, TooLargeError
from .runtime import TensorSpec


def _bad(message: str) -> InvalidRequestError:
    return InvalidRequestError(message)


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(slots=True)
class InferRequest:
    id: str | None
    inputs: Arrays
    outputs: Sequence[RequestedOutput]  # may be shared between requests: never mutated


# What one BYTES element costs in memory on its way through a request, beyond its own bytes:
# the decoded str and list slot, the object array, onnxruntime's std::string, the output
# array's str and the encoder's copy. Measured at about 200 bytes; rounded up.
BYTES_ELEMENT_COST = 256


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-request bounds, from the settings."""

    max_elements: int  # per tensor; no element is smaller than one byte of body
    max_memory: int  # all input tensors together, decoded (MODELSERVER_MAX_REQUEST_MEMORY_BYTES)
    max_json_bytes: int  # the JSON part of a REST request (MODELSERVER_MAX_JSON_BYTES)


class MemoryBudget:
    """The memory one request's tensors may take, charged input by input before decoding."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def charge(self, name: str, spec: TensorSpec, shape: tuple[int, ...], count: int) -> None:
        per_element = BYTES_ELEMENT_COST if spec.datatype == "BYTES" else spec.dtype.itemsize
        self.used += count * per_element
        if self.used > self.limit:
            raise TooLargeError(
                f"input '{name}': shape {list(shape)} of {spec.datatype} takes the request to "
                f"about {self.used} bytes in memory, over the {self.limit}-byte limit "
                "(MODELSERVER_MAX_REQUEST_MEMORY_BYTES)"
            )


def describe(value: Any) -> str:
    """A short description of a JSON value, never its (possibly huge or deep) repr."""
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    return repr(value) if isinstance(value, int | float | bool) or value is None else "a value"


def check_shape(
    name: str, raw: Any, spec: TensorSpec, *, max_elements: int, budget: MemoryBudget
) -> tuple[int, ...]:
    """The shape as a tuple, checked against the model and charged to the request's budget."""
    want = spec.shape
    if type(raw) is not list or len(raw) != len(want):
        _shape_error(name, raw, want)
    count = 1
    for d, w in zip(raw, want, strict=True):  # one pass: this runs on every request
        if type(d) is not int or d < 0 or (w != -1 and d != w):
            _shape_error(name, raw, want)
        count *= d
    shape = tuple(raw)
    if count > max_elements:
        raise _bad(f"input '{name}': shape {list(shape)} is too large ({count} elements)")
    budget.charge(name, spec, shape, count)
    return shape


def _shape_error(name: str, raw: Any, want: tuple[int, ...]) -> NoReturn:
    """Say what is wrong with a shape that failed the fast check."""
    if not isinstance(raw, list):
        raise _bad(
            f"input '{name}': shape must be a list of non-negative integers, got {describe(raw)}"
        )
    for i, d in enumerate(raw):
        if type(d) is not int or d < 0:  # bool is an int subclass: reject it explicitly
            raise _bad(
                f"input '{name}': shape must be a list of non-negative integers, "
                f"element {i} is {describe(d)}"
            )
    if len(raw) != len(want):
        raise _bad(
            f"input '{name}': shape {raw} has rank {len(raw)}, the model expects "
            f"rank {len(want)} {list(want)}"
        )
    raise _bad(
        f"input '{name}': shape {raw} does not match the model's {list(want)} (-1 is any size)"
    )


def _flatten_strings(name: str, data: list[Any], depth: int) -> list[str]:
    """Nested lists of strings, row-major, nested at most ``depth`` deep (the tensor's rank)."""
    out: list[str] = []
    # Iterative, with a depth bound: how deep the lists nest is the client's choice.
    stack: list[tuple[list[Any], int]] = [(data, 0)]
    while stack:
        items, start = stack.pop()
        for i in range(start, len(items)):
            item = items[i]
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, list):
                if len(stack) + 2 > depth:
                    raise _bad(
                        f"input '{name}': BYTES data is nested deeper than the shape's rank {depth}"
                    )
                stack.append((items, i + 1))  # resume here after the sublist
                stack.append((item, 0))
                break
            else:
                raise _bad(f"input '{name}': BYTES data must be strings, got {type(item).__name__}")
    return out


def from_list(
    name: str, spec: TensorSpec, data: Any, shape: tuple[int, ...]
) -> np.ndarray[Any, Any]:
    count = math.prod(shape)
    if not isinstance(data, list):
        raise _bad(f"input '{name}': data must be a list, got {type(data).__name__}")
    if spec.datatype == "BYTES":
        flat = _flatten_strings(name, data, max(1, len(shape)))
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
    else:
        try:
            arr = np.asarray(data)
        except (ValueError, TypeError):
            raise _bad(f"input '{name}': data is ragged or has mixed types") from None
        if arr.dtype.kind == "f" and spec.dtype.kind == "f":  # JSON numbers for a float input
            arr = arr.astype(spec.dtype, copy=False)
        else:
            arr = _convert(name, spec, arr, data) if arr.size else arr.astype(spec.dtype)
    if arr.size != count:
        raise _bad(
            f"input '{name}': {arr.size} data elements do not match shape {list(shape)} "
            f"({count} elements)"
        )
    return arr.reshape(shape)


def _convert(
    name: str, spec: TensorSpec, arr: np.ndarray[Any, Any], data: list[Any]
) -> np.ndarray[Any, Any]:
    """Cast parsed JSON numbers to the model's type, refusing lossy or out-of-range casts."""
    kind = arr.dtype.kind
    want = spec.dtype.kind
    if want == "b":
        ok = kind == "b"
    elif want in "iu":
        if kind in "iu":
            info = np.iinfo(spec.dtype)  # type: ignore[type-var]
            if int(arr.min()) < info.min or int(arr.max()) > info.max:
                raise _bad(f"input '{name}': values out of range for {spec.datatype}")
            ok = True
        elif kind == "f" and bool(np.all(arr == np.trunc(arr))):
            # numpy turns a mix of int64 and larger uint64 values into float64: cast exactly.
            try:
                return np.asarray(data, dtype=spec.dtype)
            except (OverflowError, ValueError, TypeError):
                raise _bad(f"input '{name}': values out of range for {spec.datatype}") from None
        else:
            ok = False
    else:  # float
        ok = kind in "iuf"
    if not ok:
        what = {"b": "booleans", "U": "strings", "O": "mixed or out-of-range values"}.get(
            kind, f"{arr.dtype} values"
        )
        raise _bad(f"input '{name}': {spec.datatype} data cannot hold {what}")
    return arr.astype(spec.dtype, copy=False)


def from_raw(
    name: str, spec: TensorSpec, body: bytes, start: int, size: int, shape: tuple[int, ...]
) -> np.ndarray[Any, Any]:
    count = math.prod(shape)
    if spec.datatype == "BYTES":
        items: list[str] = []
        pos, end = start, start + size
        while pos < end:
            if pos + 4 > end:
                raise _bad(f"input '{name}': truncated BYTES length prefix in binary data")
            length = int.from_bytes(body[pos : pos + 4], "little")
            pos += 4
            if pos + length > end:
                raise _bad(f"input '{name}': BYTES element overruns its binary data")
            try:
                items.append(body[pos : pos + length].decode())
            except UnicodeDecodeError:
                raise _bad(f"input '{name}': BYTES element is not valid UTF-8") from None
            pos += length
        if len(items) != count:
            raise _bad(
                f"input '{name}': {len(items)} BYTES elements do not match shape "
                f"{list(shape)} ({count} elements)"
            )
        arr = np.empty(count, dtype=object)
        arr[:] = items
        return arr.reshape(shape)
    need = count * spec.dtype.itemsize
    if size != need:
        raise _bad(
            f"input '{name}': binary_data_size {size} does not match shape {list(shape)} "
            f"of {spec.datatype} ({need} bytes)"
        )
    arr = np.frombuffer(body, dtype=spec.dtype, count=count, offset=start)
    if not arr.flags.aligned:
        arr = arr.copy()
    return arr.reshape(shape)
