"""Open Inference Protocol v2 datatypes and their numpy and ONNX counterparts."""

from __future__ import annotations

from typing import Final

import numpy as np

# OIP datatype -> numpy dtype (little-endian, as the binary extension is little-endian).
# BF16 is left out: onnxruntime's Python API has no numpy type to pass it in.
OIP_TO_NUMPY: Final[dict[str, np.dtype[np.generic]]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(np.object_),
}

# onnxruntime NodeArg.type -> OIP datatype.
ONNX_TO_OIP: Final[dict[str, str]] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

ALL_OIP_DATATYPES: Final[frozenset[str]] = frozenset(
    {*OIP_TO_NUMPY, "BF16"}  # BF16 is a valid OIP name that this server cannot take
)


# A dict lookup: comparing numpy dtypes one by one costs microseconds per output.
_NUMPY_TO_OIP: Final[dict[np.dtype[np.generic], str]] = {
    dtype: name for name, dtype in OIP_TO_NUMPY.items() if name != "BYTES"
}


def numpy_to_oip(dtype: np.dtype[np.generic]) -> str:
    """OIP datatype of an output array (onnxruntime returns str objects for strings)."""
    name = _NUMPY_TO_OIP.get(dtype)
    if name is not None:
        return name
    if dtype.kind in ("O", "U", "S"):
        return "BYTES"
    for name, candidate in OIP_TO_NUMPY.items():  # a byte order other than little-endian
        if candidate == dtype:
            return name
    raise ValueError(f"no OIP datatype for numpy dtype {dtype}")
