"""Tensor datatypes of the Open Inference Protocol and their numpy equivalents.

On the wire between processes a tensor is ``[datatype, shape, data]``: ``data`` is the
raw little-endian buffer, or a list of ``bytes`` for BYTES tensors.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from stratus.errors import InvalidTensor, UnencodableOutput

NUMERIC_DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
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
}
BYTES = "BYTES"
DATATYPES = frozenset(NUMERIC_DATATYPES) | {BYTES}

_BY_KIND: dict[tuple[str, int], str] = {
    (dtype.kind, dtype.itemsize): name for name, dtype in NUMERIC_DATATYPES.items()
}

WireTensor = list[Any]  # [datatype, shape, data]


def element_count(shape: list[int]) -> int:
    return math.prod(shape)


def check_shape(name: str, shape: Any) -> list[int]:
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidTensor(f"input {name!r}: shape must be a list of non-negative integers")
    return shape


def datatype_of(array: np.ndarray[Any, Any], name: str) -> str:
    if array.dtype.kind in ("O", "S", "U"):
        return BYTES
    datatype = _BY_KIND.get((array.dtype.kind, array.dtype.itemsize))
    if datatype is None:
        raise UnencodableOutput(
            f"output {name!r} has dtype {array.dtype}, which the v2 protocol cannot carry"
        )
    return datatype


def to_wire(value: Any, name: str) -> WireTensor:
    """Encode a handler's output value (array, tensor, list or scalar) for the wire."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise UnencodableOutput(f"output {name!r} is not array-like: {exc}") from exc
    datatype = datatype_of(array, name)
    shape = [int(d) for d in array.shape]
    if datatype == BYTES:
        items = [item.encode() if isinstance(item, str) else item for item in array.reshape(-1)]
        if not all(isinstance(item, bytes) for item in items):
            raise UnencodableOutput(f"output {name!r} mixes bytes with other objects")
        return [BYTES, shape, items]
    little = array.astype(NUMERIC_DATATYPES[datatype], copy=False)
    return [datatype, shape, np.ascontiguousarray(little).tobytes()]


def from_wire(name: str, tensor: WireTensor) -> np.ndarray[Any, Any]:
    """Rebuild an array from the wire without copying numeric data."""
    datatype, shape, data = tensor
    check_shape(name, shape)
    if datatype == BYTES:
        if len(data) != element_count(shape):
            raise InvalidTensor(
                f"input {name!r}: {len(data)} BYTES elements do not fill shape {shape}"
            )
        array = np.empty(len(data), dtype=object)
        array[:] = data
        return array.reshape(shape)
    dtype = NUMERIC_DATATYPES.get(datatype)
    if dtype is None:
        raise InvalidTensor(f"input {name!r}: unknown datatype {datatype!r}")
    expected = element_count(shape) * dtype.itemsize
    if len(data) != expected:
        raise InvalidTensor(
            f"input {name!r}: {len(data)} bytes of data do not fill shape {shape} of {datatype} "
            f"({expected} bytes)"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape)
