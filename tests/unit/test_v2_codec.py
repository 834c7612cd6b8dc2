"""Unit tests for Open Inference Protocol v2 request parsing and response building."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stratus.errors import InvalidJSON, InvalidTensor, UnencodableOutput
from stratus.gateway.adapters.v2_codec import (
    HEADER_LENGTH,
    InferRequest,
    build_infer_response,
    check_declared_inputs,
    parse_infer_request,
)
from stratus.runtime.tensors import BYTES, NUMERIC_DATATYPES


def json_body(*inputs: dict[str, Any], **document: Any) -> bytes:
    return json.dumps({"inputs": list(inputs), **document}).encode()


def le_bytes(values: list[Any], datatype: str) -> bytes:
    return np.array(values, dtype=NUMERIC_DATATYPES[datatype]).tobytes()


def pack_bytes(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def binary_body(entries: list[tuple[dict[str, Any], bytes]], **document: Any) -> tuple[bytes, str]:
    """A body using the binary extension, and its Inference-Header-Content-Length."""
    inputs = [{**entry, "parameters": {"binary_data_size": len(blob)}} for entry, blob in entries]
    header = json.dumps({"inputs": inputs, **document}).encode()
    return header + b"".join(blob for _, blob in entries), str(len(header))


def unpack_bytes(blob: bytes) -> list[bytes]:
    items, offset = [], 0
    while offset < len(blob):
        (length,) = struct.unpack_from("<I", blob, offset)
        items.append(blob[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return items


def split_response(body: bytes, headers: dict[str, str]) -> tuple[dict[str, Any], bytes]:
    length = int(headers[HEADER_LENGTH])
    return json.loads(body[:length]), body[length:]


# -- parse_infer_request: JSON data --------------------------------------------------


def test_flat_json_data() -> None:
    request = parse_infer_request(
        json_body({"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3.5, 4]}), None
    )
    assert request.inputs == {"x": ["FP32", [2, 2], le_bytes([1, 2, 3.5, 4], "FP32")]}
    assert request.id is None
    assert request.requested is None
    assert request.binary_output is False
    assert request.parameters == {}


def test_nested_json_data_is_flattened_in_row_major_order() -> None:
    nested = parse_infer_request(
        json_body({"name": "x", "datatype": "INT64", "shape": [2, 3], "data": [[1, 2, 3], [4, 5, 6]]}),
        None,
    )
    assert nested.inputs["x"] == ["INT64", [2, 3], le_bytes([1, 2, 3, 4, 5, 6], "INT64")]


def test_scalar_data_fills_a_single_element_shape() -> None:
    request = parse_infer_request(json_body({"name": "x", "datatype": "INT32", "shape": [1], "data": 7}),
                                  None)
    assert request.inputs["x"] == ["INT32", [1], le_bytes([7], "INT32")]


@pytest.mark.parametrize("datatype", sorted(NUMERIC_DATATYPES))
def test_every_numeric_datatype_from_json(datatype: str) -> None:
    values: list[Any] = [True, False, True] if datatype == "BOOL" else [0, 1, 2]
    request = parse_infer_request(
        json_body({"name": "x", "datatype": datatype, "shape": [3], "data": values}), None
    )
    assert request.inputs["x"] == [datatype, [3], le_bytes(values, datatype)]


def test_several_inputs_and_request_fields() -> None:
    body = json_body(
        {"name": "a", "datatype": "FP64", "shape": [1], "data": [0.25]},
        {"name": "b", "datatype": "BYTES", "shape": [2], "data": ["hi", "\u00e9"]},
        id=42,
        parameters={"binary_data_output": True, "priority": 3},
        outputs=[{"name": "y"}, {"name": "z", "parameters": {"binary_data": True}}],
    )
    request = parse_infer_request(body, None)
    assert request.inputs == {
        "a": ["FP64", [1], le_bytes([0.25], "FP64")],
        "b": [BYTES, [2], [b"hi", "\u00e9".encode()]],
    }
    assert request.id == "42"
    assert request.binary_output is True
    assert request.parameters == {"binary_data_output": True, "priority": 3}
    assert request.requested == [("y", False), ("z", True)]


def test_bool_data_for_fp32_is_accepted() -> None:
    request = parse_infer_request(
        json_body({"name": "x", "datatype": "FP32", "shape": [2], "data": [True, False]}), None
    )
    assert request.inputs["x"][2] == le_bytes([1.0, 0.0], "FP32")


def test_int_data_for_fp32_and_bool_data_for_int32_are_accepted() -> None:
    ints = parse_infer_request(json_body({"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]}),
                               None)
    assert ints.inputs["x"][2] == le_bytes([1.0, 2.0], "FP32")
    bools = parse_infer_request(
        json_body({"name": "x", "datatype": "INT32", "shape": [2], "data": [True, False]}), None
    )
    assert bools.inputs["x"][2] == le_bytes([1, 0], "INT32")


@pytest.mark.parametrize(
    ("datatype", "data"),
    [
        ("INT32", ["1", "2"]),
        ("INT32", [1.5, 2.0]),
        ("UINT8", [1.0, 2.0]),
        ("FP32", ["1", "2"]),
        ("BOOL", [1, 0]),
        ("INT64", [1, None]),
        ("FP32", [{"a": 1}, 2]),
        ("INT64", [2**70, 1]),
    ],
    ids=["str-int32", "float-int32", "float-uint8", "str-fp32", "int-bool", "null", "object", "huge-int"],
)
def test_json_data_of_the_wrong_kind_is_rejected(datatype: str, data: list[Any]) -> None:
    with pytest.raises(InvalidTensor, match="input 'x'"):
        parse_infer_request(json_body({"name": "x", "datatype": datatype, "shape": [2], "data": data}), None)


@pytest.mark.parametrize(
    ("shape", "data"),
    [([3], [1, 2]), ([2], [1, 2, 3]), ([2, 2], [[1, 2], [3, 4], [5, 6]]), ([0], [1]), ([1], [])],
)
def test_wrong_element_count_is_rejected(shape: list[int], data: list[Any]) -> None:
    with pytest.raises(InvalidTensor, match="input 'x'"):
        parse_infer_request(json_body({"name": "x", "datatype": "FP32", "shape": shape, "data": data}), None)


def test_ragged_json_data_is_rejected() -> None:
    with pytest.raises(InvalidTensor, match="rectangular"):
        parse_infer_request(
            json_body({"name": "x", "datatype": "INT32", "shape": [3], "data": [[1, 2], 3]}), None
        )


def test_empty_tensors_from_json() -> None:
    request = parse_infer_request(
        json_body(
            {"name": "a", "datatype": "FP32", "shape": [0], "data": []},
            {"name": "b", "datatype": "BYTES", "shape": [0, 3], "data": []},
        ),
        None,
    )
    assert request.inputs == {"a": ["FP32", [0], b""], "b": [BYTES, [0, 3], []]}


def test_bytes_json_data() -> None:
    request = parse_infer_request(
        json_body({"name": "s", "datatype": "BYTES", "shape": [2, 1], "data": [["a"], ["\u2603"]]}), None
    )
    assert request.inputs["s"] == [BYTES, [2, 1], [b"a", "\u2603".encode()]]


@pytest.mark.parametrize(
    ("shape", "data", "message"),
    [([3], ["a", "b"], "elements for shape"), ([2], ["a", 1], "must be strings"),
     ([2], [["a", "b"], ["c"]], "must be strings"), ([1], [None], "must be strings")],
)
def test_bad_bytes_json_data(shape: list[int], data: list[Any], message: str) -> None:
    with pytest.raises(InvalidTensor, match=message):
        parse_infer_request(json_body({"name": "s", "datatype": "BYTES", "shape": shape, "data": data}), None)


# -- parse_infer_request: malformed documents -----------------------------------------


@pytest.mark.parametrize("body", [b"", b"{", b"not json", b"\xff\xfe{}", b'{"inputs": [}'])
def test_invalid_json_raises_invalid_json(body: bytes) -> None:
    with pytest.raises(InvalidJSON):
        parse_infer_request(body, None)


@pytest.mark.parametrize(
    "document",
    [[], "inputs", {}, {"inputs": {"x": 1}}, {"inputs": None}],
    ids=["list", "string", "no-inputs", "inputs-map", "inputs-null"],
)
def test_document_without_an_inputs_list_is_rejected(document: Any) -> None:
    with pytest.raises(InvalidTensor, match="'inputs' list"):
        parse_infer_request(json.dumps(document).encode(), None)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("x", "needs a 'name'"),
        ({"datatype": "FP32", "shape": [1], "data": [1]}, "needs a 'name'"),
        ({"name": 3, "datatype": "FP32", "shape": [1], "data": [1]}, "needs a 'name'"),
        ({"name": "x", "datatype": "FP8", "shape": [1], "data": [1]}, "unsupported datatype 'FP8'"),
        ({"name": "x", "datatype": "fp32", "shape": [1], "data": [1]}, "unsupported datatype"),
        ({"name": "x", "shape": [1], "data": [1]}, "unsupported datatype None"),
        ({"name": "x", "datatype": "FP32", "data": [1]}, "shape must be a list"),
        ({"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]}, "shape must be a list"),
        ({"name": "x", "datatype": "FP32", "shape": "1", "data": [1]}, "shape must be a list"),
        ({"name": "x", "datatype": "FP32", "shape": [1]}, "neither 'data' nor binary data"),
    ],
    ids=["not-a-map", "no-name", "int-name", "unknown-datatype", "lowercase-datatype", "no-datatype",
         "no-shape", "negative-dim", "string-shape", "no-data"],
)
def test_malformed_input_entries_are_rejected(entry: Any, message: str) -> None:
    with pytest.raises(InvalidTensor, match=message):
        parse_infer_request(json.dumps({"inputs": [entry]}).encode(), None)


@pytest.mark.parametrize("outputs", [["y"], [{"parameters": {}}], [{"name": 1}]])
def test_malformed_requested_outputs_are_rejected(outputs: list[Any]) -> None:
    body = json_body({"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}, outputs=outputs)
    with pytest.raises(InvalidTensor, match="requested output needs a 'name'"):
        parse_infer_request(body, None)


def test_requested_output_parameters_that_are_not_a_map_are_rejected() -> None:
    body = json_body({"name": "x", "datatype": "FP32", "shape": [1], "data": [1]},
                     outputs=[{"name": "y", "parameters": ["binary_data"]}])
    with pytest.raises(InvalidTensor):
        parse_infer_request(body, None)


def test_non_map_request_parameters_are_ignored() -> None:
    body = json_body({"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}, parameters=[1, 2])
    request = parse_infer_request(body, None)
    assert request.parameters == {}
    assert request.binary_output is False


@pytest.mark.parametrize(
    ("datatype", "value"), [("UINT8", 300), ("UINT8", -1), ("INT8", 128), ("INT64", 2**63)]
)
def test_out_of_range_integers_are_rejected(datatype: str, value: int) -> None:
    with pytest.raises(InvalidTensor):
        parse_infer_request(
            json_body({"name": "x", "datatype": datatype, "shape": [1], "data": [value]}), None
        )


# -- parse_infer_request: binary tensor extension --------------------------------------


def test_binary_inputs_of_several_datatypes() -> None:
    floats = le_bytes([1.5, -2.0, 3.25], "FP32")
    longs = le_bytes([[1, 2], [3, 4]], "INT64")
    strings = [b"hello", b"", b"\xff\x00binary", "\u2603".encode()]
    body, length = binary_body([
        ({"name": "f", "datatype": "FP32", "shape": [3]}, floats),
        ({"name": "s", "datatype": "BYTES", "shape": [2, 2]}, pack_bytes(strings)),
        ({"name": "l", "datatype": "INT64", "shape": [2, 2]}, longs),
    ], id="req-1")
    request = parse_infer_request(body, length)
    assert request.inputs == {
        "f": ["FP32", [3], floats],
        "s": [BYTES, [2, 2], strings],
        "l": ["INT64", [2, 2], longs],
    }
    assert request.id == "req-1"
    assert all(isinstance(item, bytes) for item in request.inputs["s"][2])
    assert isinstance(request.inputs["f"][2], bytes)


def test_binary_and_json_inputs_mix() -> None:
    header = json.dumps({"inputs": [
        {"name": "j", "datatype": "INT32", "shape": [2], "data": [5, 6]},
        {"name": "b", "datatype": "UINT8", "shape": [3], "parameters": {"binary_data_size": 3}},
    ]}).encode()
    request = parse_infer_request(header + b"\x01\x02\x03", str(len(header)))
    assert request.inputs == {
        "j": ["INT32", [2], le_bytes([5, 6], "INT32")],
        "b": ["UINT8", [3], b"\x01\x02\x03"],
    }


def test_header_length_covering_the_whole_body_is_plain_json() -> None:
    body = json_body({"name": "x", "datatype": "FP32", "shape": [1], "data": [1]})
    assert parse_infer_request(body, str(len(body))).inputs["x"][2] == le_bytes([1], "FP32")


def test_empty_binary_tensors() -> None:
    body, length = binary_body([
        ({"name": "e", "datatype": "FP32", "shape": [0, 4]}, b""),
        ({"name": "s", "datatype": "BYTES", "shape": [0]}, b""),
    ])
    assert parse_infer_request(body, length).inputs == {"e": ["FP32", [0, 4], b""], "s": [BYTES, [0], []]}


@pytest.mark.parametrize("header_length", ["abc", "-1", "", "1.5", " 10", "0x10"])
def test_header_length_that_is_not_a_number_is_rejected(header_length: str) -> None:
    with pytest.raises(InvalidTensor, match=HEADER_LENGTH):
        parse_infer_request(b'{"inputs": []}', header_length)


def test_header_length_beyond_the_body_is_rejected() -> None:
    body = b'{"inputs": []}'
    with pytest.raises(InvalidTensor, match="does not fit the body"):
        parse_infer_request(body, str(len(body) + 1))


def test_header_length_with_a_superscript_digit_is_rejected() -> None:
    with pytest.raises(InvalidTensor):
        parse_infer_request(b'{"inputs": []}', "\u00b2")


def test_header_length_that_cuts_the_json_is_invalid_json() -> None:
    body = json_body({"name": "x", "datatype": "FP32", "shape": [1], "data": [1]})
    with pytest.raises(InvalidJSON):
        parse_infer_request(body, "5")


@pytest.mark.parametrize("size", [5, 100, -1, "4", 1.5, None])
def test_bad_binary_data_size_is_rejected(size: Any) -> None:
    header = json.dumps({"inputs": [
        {"name": "x", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": size}},
    ]}).encode()
    body = header + b"\x00\x00\x80?"
    if size is None:  # no size: the input has neither data nor binary data
        with pytest.raises(InvalidTensor, match="neither"):
            parse_infer_request(body, str(len(header)))
        return
    with pytest.raises(InvalidTensor, match="input 'x'"):
        parse_infer_request(body, str(len(header)))


def test_binary_data_size_overrunning_the_body_names_the_input() -> None:
    body, length = binary_body([
        ({"name": "a", "datatype": "UINT8", "shape": [2]}, b"\x01\x02"),
        ({"name": "b", "datatype": "UINT8", "shape": [4]}, b"\x01\x02\x03\x04"),
    ])
    with pytest.raises(InvalidTensor, match=r"input 'b': binary_data_size 4 overruns the body"):
        parse_infer_request(body[:-1], length)


def test_binary_data_without_the_header_length_overruns() -> None:
    body = json.dumps({"inputs": [
        {"name": "x", "datatype": "UINT8", "shape": [1], "parameters": {"binary_data_size": 1}},
    ]}).encode()
    with pytest.raises(InvalidTensor, match="overruns"):
        parse_infer_request(body, None)


def test_binary_size_that_does_not_match_the_shape_is_rejected() -> None:
    body, length = binary_body([({"name": "x", "datatype": "FP32", "shape": [2]}, b"\x00" * 12)])
    with pytest.raises(InvalidTensor, match=r"12 bytes for shape \[2\] of FP32 \(expected 8\)"):
        parse_infer_request(body, length)


def test_leftover_binary_bytes_are_rejected() -> None:
    body, length = binary_body([({"name": "x", "datatype": "UINT8", "shape": [2]}, b"\x01\x02")])
    with pytest.raises(InvalidTensor, match="3 bytes of binary data belong to no input"):
        parse_infer_request(body + b"xyz", length)


def test_binary_section_with_only_json_inputs_is_rejected() -> None:
    header = json_body({"name": "x", "datatype": "UINT8", "shape": [1], "data": [1]})
    with pytest.raises(InvalidTensor, match="belong to no input"):
        parse_infer_request(header + b"\x00", str(len(header)))


@pytest.mark.parametrize(
    ("blob", "shape", "message"),
    [
        (pack_bytes([b"ab"]) + b"\x01\x00", [2], "truncated BYTES element length"),
        (struct.pack("<I", 10) + b"abc", [1], "overruns its data"),
        (pack_bytes([b"a", b"b", b"c"]), [2], "3 BYTES elements for 2"),
        (pack_bytes([b"a"]), [2], "1 BYTES elements for 2"),
    ],
    ids=["truncated-length", "overrun", "too-many", "too-few"],
)
def test_malformed_binary_bytes_tensors(blob: bytes, shape: list[int], message: str) -> None:
    body, length = binary_body([({"name": "s", "datatype": "BYTES", "shape": shape}, blob)])
    with pytest.raises(InvalidTensor, match=message):
        parse_infer_request(body, length)


@given(
    strings=st.lists(st.binary(max_size=12), max_size=10),
    floats=st.lists(st.floats(width=32, allow_nan=False), max_size=10),
)
def test_property_binary_request_round_trip(strings: list[bytes], floats: list[float]) -> None:
    float_blob = le_bytes(floats, "FP32")
    body, length = binary_body([
        ({"name": "s", "datatype": "BYTES", "shape": [len(strings)]}, pack_bytes(strings)),
        ({"name": "f", "datatype": "FP32", "shape": [len(floats)]}, float_blob),
    ])
    request = parse_infer_request(body, length)
    assert request.inputs["s"] == [BYTES, [len(strings)], strings]
    assert request.inputs["f"] == ["FP32", [len(floats)], float_blob]


# -- check_declared_inputs --------------------------------------------------------


DECLARED = [
    {"name": "x", "datatype": "FP32", "shape": [-1, 4]},
    {"name": "mask", "datatype": "BOOL", "shape": [-1, -1]},
]


def tensor(datatype: str, shape: list[int]) -> list[Any]:
    return [datatype, shape, b""]


def test_no_declared_inputs_accepts_anything() -> None:
    check_declared_inputs({"anything": tensor("INT8", [1, 2, 3])}, [])


@pytest.mark.parametrize("batch", [0, 1, 7, 1000])
def test_wildcard_dimensions_match_any_size(batch: int) -> None:
    check_declared_inputs({"x": tensor("FP32", [batch, 4]), "mask": tensor("BOOL", [batch, 9])}, DECLARED)


def test_missing_input_is_rejected() -> None:
    with pytest.raises(InvalidTensor, match="missing input 'mask'"):
        check_declared_inputs({"x": tensor("FP32", [1, 4])}, DECLARED)


def test_extra_input_is_rejected() -> None:
    inputs = {"x": tensor("FP32", [1, 4]), "mask": tensor("BOOL", [1, 1]), "y": tensor("FP32", [1])}
    with pytest.raises(InvalidTensor, match=r"unknown input 'y'; this model takes \['mask', 'x'\]"):
        check_declared_inputs(inputs, DECLARED)


def test_wrong_datatype_is_rejected() -> None:
    with pytest.raises(InvalidTensor, match="input 'x' must be FP32, not FP64"):
        check_declared_inputs({"x": tensor("FP64", [1, 4]), "mask": tensor("BOOL", [1, 1])}, DECLARED)


@pytest.mark.parametrize("shape", [[1, 3], [4], [1, 4, 1], []])
def test_wrong_shape_is_rejected(shape: list[int]) -> None:
    with pytest.raises(InvalidTensor, match="input 'x' has shape"):
        check_declared_inputs({"x": tensor("FP32", shape), "mask": tensor("BOOL", [1, 1])}, DECLARED)


def test_scalar_declared_shape() -> None:
    declared = [{"name": "t", "datatype": "FP64", "shape": []}]
    check_declared_inputs({"t": tensor("FP64", [])}, declared)
    with pytest.raises(InvalidTensor):
        check_declared_inputs({"t": tensor("FP64", [1])}, declared)


# -- build_infer_response ---------------------------------------------------------


def make_request(
    requested: list[tuple[str, bool]] | None = None, binary_output: bool = False, id: str | None = "r1"
) -> InferRequest:
    return InferRequest(id=id, inputs={}, requested=requested, binary_output=binary_output)


OUTPUTS: dict[str, list[Any]] = {
    "y": ["FP32", [2, 2], le_bytes([0.5, 1.0, -2.0, 3.0], "FP32")],
    "labels": [BYTES, [2], [b"cat", "\u00e9t\u00e9".encode()]],
    "flags": ["BOOL", [3], le_bytes([True, False, True], "BOOL")],
}


def test_json_response() -> None:
    body, headers = build_infer_response("model", "3", make_request(), OUTPUTS)
    assert headers == {"content-type": "application/json"}
    document = json.loads(body)
    assert document == {
        "model_name": "model",
        "model_version": "3",
        "id": "r1",
        "outputs": [
            {"name": "y", "datatype": "FP32", "shape": [2, 2], "data": [0.5, 1.0, -2.0, 3.0]},
            {"name": "labels", "datatype": "BYTES", "shape": [2], "data": ["cat", "\u00e9t\u00e9"]},
            {"name": "flags", "datatype": "BOOL", "shape": [3], "data": [True, False, True]},
        ],
    }


def test_response_without_an_id_has_no_id() -> None:
    body, _ = build_infer_response("m", "1", make_request(id=None), {"y": OUTPUTS["y"]})
    assert "id" not in json.loads(body)


def test_binary_response_header_length_and_sections_decode_back() -> None:
    body, headers = build_infer_response("m", "1", make_request(binary_output=True), OUTPUTS)
    assert headers["content-type"] == "application/octet-stream"
    document, binary = split_response(body, headers)
    sizes = [entry["parameters"]["binary_data_size"] for entry in document["outputs"]]
    assert all("data" not in entry for entry in document["outputs"])
    assert sum(sizes) == len(binary)
    blobs, offset = {}, 0
    for entry, size in zip(document["outputs"], sizes, strict=True):
        blobs[entry["name"]] = binary[offset : offset + size]
        offset += size
    np.testing.assert_array_equal(
        np.frombuffer(blobs["y"], dtype="<f4").reshape(2, 2), [[0.5, 1.0], [-2.0, 3.0]]
    )
    assert unpack_bytes(blobs["labels"]) == OUTPUTS["labels"][2]
    assert np.frombuffer(blobs["flags"], dtype="?").tolist() == [True, False, True]


def test_requested_outputs_select_order_and_per_output_binary() -> None:
    request = make_request(requested=[("flags", False), ("y", True)])
    body, headers = build_infer_response("m", "1", request, OUTPUTS)
    document, binary = split_response(body, headers)
    assert [entry["name"] for entry in document["outputs"]] == ["flags", "y"]
    assert document["outputs"][0]["data"] == [True, False, True]
    assert document["outputs"][1]["parameters"] == {"binary_data_size": 16}
    assert binary == OUTPUTS["y"][2]


def test_request_level_binary_output_applies_to_requested_outputs() -> None:
    request = make_request(requested=[("labels", False)], binary_output=True)
    body, headers = build_infer_response("m", "1", request, OUTPUTS)
    document, binary = split_response(body, headers)
    assert document["outputs"][0]["parameters"]["binary_data_size"] == len(binary)
    assert unpack_bytes(binary) == OUTPUTS["labels"][2]


def test_requesting_no_outputs_returns_none() -> None:
    body, headers = build_infer_response("m", "1", make_request(requested=[]), OUTPUTS)
    assert json.loads(body)["outputs"] == []
    assert HEADER_LENGTH not in headers


def test_requested_output_missing_is_an_error() -> None:
    with pytest.raises(UnencodableOutput, match="requested output 'z' was not produced"):
        build_infer_response("m", "1", make_request(requested=[("y", False), ("z", False)]), OUTPUTS)


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_json_output_is_unencodable(datatype: str, bad: float) -> None:
    outputs = {"y": [datatype, [2], le_bytes([1.0, bad], datatype)]}
    with pytest.raises(UnencodableOutput, match="NaN or infinity"):
        build_infer_response("m", "1", make_request(), outputs)


def test_non_finite_binary_output_is_fine() -> None:
    outputs = {"y": ["FP32", [2], le_bytes([np.nan, np.inf], "FP32")]}
    body, headers = build_infer_response("m", "1", make_request(binary_output=True), outputs)
    _, binary = split_response(body, headers)
    back = np.frombuffer(binary, dtype="<f4")
    assert np.isnan(back[0]) and np.isinf(back[1])


def test_non_utf8_bytes_in_a_json_output_are_unencodable() -> None:
    outputs = {"s": [BYTES, [1], [b"\xff\xfe"]]}
    with pytest.raises(UnencodableOutput, match="non-UTF-8"):
        build_infer_response("m", "1", make_request(), outputs)
    body, headers = build_infer_response("m", "1", make_request(binary_output=True), outputs)
    assert unpack_bytes(split_response(body, headers)[1]) == [b"\xff\xfe"]


def test_integer_extremes_survive_json() -> None:
    outputs = {"u": ["UINT64", [1], le_bytes([2**64 - 1], "UINT64")],
               "i": ["INT64", [1], le_bytes([-(2**63)], "INT64")]}
    document = json.loads(build_infer_response("m", "1", make_request(), outputs)[0])
    assert [entry["data"] for entry in document["outputs"]] == [[2**64 - 1], [-(2**63)]]


def test_request_parsed_then_response_built_round_trip() -> None:
    body, length = binary_body(
        [({"name": "x", "datatype": "INT16", "shape": [3]}, le_bytes([1, -2, 3], "INT16"))],
        outputs=[{"name": "x", "parameters": {"binary_data": True}}],
        id="abc",
    )
    request = parse_infer_request(body, length)
    response, headers = build_infer_response("echo", "2", request, request.inputs)
    document, binary = split_response(response, headers)
    assert document["id"] == "abc"
    assert document["outputs"] == [
        {"name": "x", "datatype": "INT16", "shape": [3], "parameters": {"binary_data_size": 6}}
    ]
    assert np.frombuffer(binary, dtype="<i2").tolist() == [1, -2, 3]


def test_an_input_given_twice_is_rejected() -> None:
    entry = {"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}
    with pytest.raises(InvalidTensor, match="given twice"):
        parse_infer_request(json_body(entry, entry), None)


@pytest.mark.parametrize(("datatype", "value"), [("FP32", 1e39), ("FP16", 70000.0)])
def test_floats_beyond_the_datatype_range_are_rejected(datatype: str, value: float) -> None:
    entry = {"name": "x", "datatype": datatype, "shape": [1], "data": [value]}
    with pytest.raises(InvalidTensor, match="outside the range"):
        parse_infer_request(json_body(entry), None)
