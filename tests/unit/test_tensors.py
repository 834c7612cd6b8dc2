"""Unit tests for tensor datatypes and the array <-> wire tensor conversions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from stratus.errors import InvalidTensor, UnencodableOutput
from stratus.runtime.tensors import (
    BYTES,
    DATATYPES,
    NUMERIC_DATATYPES,
    check_shape,
    datatype_of,
    element_count,
    from_wire,
    to_wire,
)


def sample_values(datatype: str) -> np.ndarray[Any, Any]:
    """A 2x3 array of the datatype holding its extreme and special values."""
    dtype = NUMERIC_DATATYPES[datatype]
    if dtype.kind == "b":
        values: list[Any] = [True, False, True, True, False, False]
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = [info.min, info.max, 0, 1, info.max - 1, info.min + (0 if dtype.kind == "u" else 1)]
    else:
        info_f = np.finfo(dtype)
        values = [info_f.min, info_f.max, -0.0, np.inf, -np.inf, np.nan]
    return np.array(values, dtype=dtype).reshape(2, 3)


def test_datatype_table_is_complete_and_little_endian() -> None:
    assert set(NUMERIC_DATATYPES) | {BYTES} == DATATYPES
    for datatype, dtype in NUMERIC_DATATYPES.items():
        assert dtype.byteorder in ("<", "|", "="), datatype
        assert dtype.newbyteorder("<") == dtype


@pytest.mark.parametrize("datatype", sorted(NUMERIC_DATATYPES))
def test_numeric_round_trip_for_every_datatype(datatype: str) -> None:
    array = sample_values(datatype)
    wire_datatype, shape, data = to_wire(array, "y")
    assert wire_datatype == datatype
    assert shape == [2, 3]
    assert isinstance(data, bytes)
    assert len(data) == 6 * NUMERIC_DATATYPES[datatype].itemsize
    back = from_wire("y", [wire_datatype, shape, data])
    assert back.dtype == NUMERIC_DATATYPES[datatype]
    assert back.shape == (2, 3)
    np.testing.assert_array_equal(back, array)  # NaN compares equal here


@pytest.mark.parametrize("datatype", sorted(NUMERIC_DATATYPES))
def test_native_dtype_maps_to_its_datatype(datatype: str) -> None:
    native = np.zeros(3, dtype=NUMERIC_DATATYPES[datatype].newbyteorder("="))
    assert datatype_of(native, "y") == datatype


@pytest.mark.parametrize("datatype", sorted(NUMERIC_DATATYPES))
def test_scalar_and_empty_shapes(datatype: str) -> None:
    dtype = NUMERIC_DATATYPES[datatype]
    scalar = np.array(1, dtype=dtype)
    wire_scalar = to_wire(scalar, "s")
    assert wire_scalar[1] == []
    assert len(wire_scalar[2]) == dtype.itemsize
    assert from_wire("s", wire_scalar).shape == ()
    empty = np.zeros((0, 4), dtype=dtype)
    wire_empty = to_wire(empty, "e")
    assert wire_empty == [datatype, [0, 4], b""]
    assert from_wire("e", wire_empty).shape == (0, 4)


def test_bytes_round_trip_from_str_bytes_and_object_arrays() -> None:
    for array in (
        np.array([["a", "bc"], ["", "\u00e9\u2603"]]),
        np.array([[b"a", b"bc"], [b"", "\u00e9\u2603".encode()]]),
        np.array([["a", b"bc"], [b"", "\u00e9\u2603"]], dtype=object),
    ):
        datatype, shape, items = to_wire(array, "s")
        assert datatype == BYTES
        assert shape == [2, 2]
        assert items == [b"a", b"bc", b"", "\u00e9\u2603".encode()]
        assert all(isinstance(item, bytes) for item in items)
        back = from_wire("s", [datatype, shape, items])
        assert back.dtype == object
        assert back.shape == (2, 2)
        assert back.tolist() == [[b"a", b"bc"], [b"", "\u00e9\u2603".encode()]]


def test_binary_bytes_elements_survive() -> None:
    items = [b"\x00\xff\xfe", b"", b"\x80"]
    back = from_wire("b", [BYTES, [3], items])
    assert back.tolist() == items


def test_empty_bytes_tensor() -> None:
    assert to_wire(np.array([], dtype=object), "e") == [BYTES, [0], []]
    assert from_wire("e", [BYTES, [0, 2], []]).shape == (0, 2)


def test_python_values_are_encoded_like_numpy_would() -> None:
    assert to_wire(5, "i")[0:2] == ["INT64", []]
    assert to_wire(2.5, "f")[0:2] == ["FP64", []]
    assert to_wire(True, "b") == ["BOOL", [], b"\x01"]
    assert to_wire([[1, 2], [3, 4]], "l")[0:2] == ["INT64", [2, 2]]
    assert to_wire(["x", "yz"], "t") == [BYTES, [2], [b"x", b"yz"]]


def test_big_endian_and_non_contiguous_arrays_are_written_little_endian_in_logical_order() -> None:
    big = np.array([1, 256, -2], dtype=">i4")
    datatype, _, data = to_wire(big, "b")
    assert datatype == "INT32"
    assert data == np.array([1, 256, -2], dtype="<i4").tobytes()
    transposed = np.arange(6, dtype=np.float32).reshape(2, 3).T
    datatype, shape, data = to_wire(transposed, "t")
    assert shape == [3, 2]
    np.testing.assert_array_equal(from_wire("t", [datatype, shape, data]), transposed)


def test_from_wire_does_not_copy_numeric_data() -> None:
    buffer = bytearray(np.array([1.0, 2.0], dtype="<f4").tobytes())
    array = from_wire("x", ["FP32", [2], buffer])
    buffer[0:4] = np.array([9.0], dtype="<f4").tobytes()
    assert array[0] == 9.0
    assert not from_wire("x", ["FP32", [2], bytes(buffer)]).flags.writeable


@pytest.mark.parametrize(
    ("shape", "size"),
    [([4], 15), ([4], 17), ([2, 2], 0), ([0], 4), ([], 8), ([3, 0], 4)],
)
def test_wrong_byte_count_raises_invalid_tensor(shape: list[int], size: int) -> None:
    with pytest.raises(InvalidTensor, match=r"input 'x': \d+ bytes of data do not fill shape"):
        from_wire("x", ["FP32", shape, b"\x00" * size])


def test_negative_dimension_never_matches_numeric_data() -> None:
    with pytest.raises(InvalidTensor):
        from_wire("x", ["INT32", [-1], b"\x00" * 4])


@pytest.mark.parametrize("datatype", ["FP8", "COMPLEX64", "fp32", "", None])
def test_unknown_datatype_on_the_wire_raises_invalid_tensor(datatype: Any) -> None:
    with pytest.raises(InvalidTensor, match="unknown datatype"):
        from_wire("x", [datatype, [1], b"\x00\x00\x00\x00"])


@pytest.mark.parametrize(("shape", "items"), [([3], [b"a"]), ([-1], [b"a", b"b"])])
def test_bytes_element_count_mismatch_raises_invalid_tensor(shape: list[int], items: list[bytes]) -> None:
    with pytest.raises(InvalidTensor):
        from_wire("x", [BYTES, shape, items])


@pytest.mark.parametrize(
    "value",
    [
        np.array([1 + 2j]),
        np.array([1 + 2j], dtype=np.complex64),
        np.array(["2024-01-01"], dtype="datetime64[D]"),
        np.array([1], dtype="timedelta64[s]"),
        np.zeros(2, dtype=[("a", "<i4"), ("b", "<f4")]),
    ],
    ids=["complex128", "complex64", "datetime64", "timedelta64", "structured"],
)
def test_unsupported_dtypes_raise_unencodable_output(value: np.ndarray[Any, Any]) -> None:
    with pytest.raises(UnencodableOutput, match="output 'y' has dtype"):
        to_wire(value, "y")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([[1, 2], [3]], "not array-like"),
        (None, "mixes bytes"),
        ({"a": 1}, "mixes bytes"),
        (np.array([b"a", 1], dtype=object), "mixes bytes"),
        (["a", None], "mixes bytes"),
    ],
    ids=["ragged", "none", "dict", "bytes-and-int", "str-and-none"],
)
def test_values_that_are_not_tensors_raise_unencodable_output(value: Any, message: str) -> None:
    with pytest.raises(UnencodableOutput, match=message):
        to_wire(value, "y")


def test_torch_tensor_is_encoded_like_its_numpy_array() -> None:
    torch = pytest.importorskip("torch")
    tensor = torch.arange(6, dtype=torch.float32, requires_grad=True).reshape(2, 3) * 2
    datatype, shape, data = to_wire(tensor, "t")
    assert (datatype, shape) == ("FP32", [2, 3])
    np.testing.assert_array_equal(from_wire("t", [datatype, shape, data]),
                                  np.arange(6, dtype=np.float32).reshape(2, 3) * 2)


def test_element_count() -> None:
    assert element_count([]) == 1
    assert element_count([2, 3, 4]) == 24
    assert element_count([5, 0]) == 0


def test_check_shape_accepts_lists_of_non_negative_ints() -> None:
    for shape in ([], [0], [1, 2, 3]):
        assert check_shape("x", shape) is shape


@pytest.mark.parametrize(
    "shape", [(1, 2), [-1], [1.0], [True], ["2"], None, 3, [[1]]],
    ids=["tuple", "negative", "float", "bool", "str", "none", "int", "nested"],
)
def test_check_shape_rejects_everything_else(shape: Any) -> None:
    with pytest.raises(InvalidTensor, match="input 'x': shape must be a list"):
        check_shape("x", shape)


numeric_arrays = st.sampled_from(sorted(NUMERIC_DATATYPES)).flatmap(
    lambda datatype: hnp.arrays(
        dtype=NUMERIC_DATATYPES[datatype],
        shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
    )
)


@given(array=numeric_arrays)
def test_property_numeric_round_trip(array: np.ndarray[Any, Any]) -> None:
    datatype, shape, data = to_wire(array, "p")
    back = from_wire("p", [datatype, shape, data])
    assert back.dtype == array.dtype
    assert list(back.shape) == shape == list(array.shape)
    np.testing.assert_array_equal(back, array)


@given(items=st.lists(st.binary(max_size=8), max_size=12), rows=st.integers(min_value=1, max_value=3))
def test_property_bytes_round_trip(items: list[bytes], rows: int) -> None:
    items = items[: len(items) - len(items) % rows]
    array = np.empty(len(items), dtype=object)
    array[:] = items
    array = array.reshape(rows, -1)
    datatype, shape, data = to_wire(array, "p")
    assert datatype == BYTES
    assert data == items
    assert from_wire("p", [datatype, shape, data]).tolist() == array.tolist()
