"""Unit tests for the replica-side payload codec: JSON, tensors and Lambda-style responses."""

from __future__ import annotations

import base64
import json
from collections import OrderedDict
from typing import Any

import numpy as np
import pytest

from stratus.errors import BadRequest, InvalidJSON, InvalidTensor, UnencodableOutput
from stratus.runtime import messages, wire
from stratus.runtime.codec import (
    decode_request,
    dump_json,
    encode_lambda,
    encode_response,
    encode_tensors,
)

# -- requests ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [{"a": [1, 2.5, None, True]}, [], "text \u2603", 3, None],
    ids=["map", "list", "str", "int", "null"],
)
def test_json_request_is_parsed(value: Any) -> None:
    assert decode_request(wire.KIND_JSON, json.dumps(value).encode()) == value


def test_json_request_accepts_str_payloads() -> None:
    assert decode_request(wire.KIND_JSON, '{"a": 1}') == {"a": 1}


@pytest.mark.parametrize("payload", [b"", b"{", b"{'a': 1}", b'"\xff"', b"[1,]"])
def test_invalid_json_request_raises_invalid_json(payload: bytes) -> None:
    with pytest.raises(InvalidJSON, match="request body is not valid JSON"):
        decode_request(wire.KIND_JSON, payload)


def test_tensor_request_becomes_named_arrays() -> None:
    payload = {
        "x": ["FP32", [2, 2], np.arange(4, dtype="<f4").tobytes()],
        "s": ["BYTES", [2], [b"a", b"\xff"]],
    }
    decoded = decode_request(wire.KIND_TENSORS, payload)
    assert set(decoded) == {"x", "s"}
    np.testing.assert_array_equal(decoded["x"], np.arange(4, dtype=np.float32).reshape(2, 2))
    assert decoded["x"].dtype == np.float32
    assert decoded["s"].tolist() == [b"a", b"\xff"]


def test_tensor_request_survives_the_wire() -> None:
    payload = {"x": ["INT16", [3], np.array([1, -2, 3], dtype="<i2").tobytes()]}
    frame = wire.encode(messages.Request(messages.REQUEST, 1, wire.KIND_TENSORS, payload, {}))
    request = messages.parse(wire.decode(frame[4:]), messages.TO_REPLICA)
    assert isinstance(request, messages.Request)
    decoded = decode_request(request.kind, request.payload)
    assert decoded["x"].tolist() == [1, -2, 3]


@pytest.mark.parametrize("payload", [[1, 2], b"x", None, "x"])
def test_tensor_payload_must_be_a_map(payload: Any) -> None:
    with pytest.raises(BadRequest, match="map of name to tensor"):
        decode_request(wire.KIND_TENSORS, payload)


def test_bad_tensor_in_payload_raises_invalid_tensor() -> None:
    with pytest.raises(InvalidTensor, match="input 'x'"):
        decode_request(wire.KIND_TENSORS, {"x": ["FP32", [2], b"\x00" * 7]})


@pytest.mark.parametrize("kind", [wire.KIND_HTTP, 99, -1])
def test_unknown_request_kind_raises_bad_request(kind: int) -> None:
    with pytest.raises(BadRequest, match=f"unknown payload kind {kind}"):
        decode_request(kind, b"{}")


# -- JSON responses ----------------------------------------------------------------


def test_dump_json_turns_numpy_values_into_lists_and_numbers() -> None:
    value = {
        "array": np.arange(6).reshape(2, 3),
        "f32": np.float32(1.5),
        "i64": np.int64(7),
        "bool": np.bool_(True),
        "empty": np.zeros((0,)),
        "nested": [np.array([0.25, 0.5])],
    }
    assert json.loads(dump_json(value)) == {
        "array": [[0, 1, 2], [3, 4, 5]],
        "f32": 1.5,
        "i64": 7,
        "bool": True,
        "empty": [],
        "nested": [[0.25, 0.5]],
    }


def test_dump_json_encodes_plain_values_compactly_as_utf8() -> None:
    assert dump_json({"a": "\u2603"}) == json.dumps({"a": "\u2603"}).encode()
    assert dump_json(None) == b"null"


def test_dump_json_handles_torch_tensors() -> None:
    torch = pytest.importorskip("torch")
    tensor = torch.tensor([[1.0, 2.0]], requires_grad=True) * 2
    assert json.loads(dump_json({"t": tensor})) == {"t": [[2.0, 4.0]]}


class Opaque:
    pass


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({1, 2}, "set is not JSON serializable"),
        (Opaque(), "Opaque is not JSON serializable"),
        (b"bytes", "bytes is not JSON serializable"),
        ({(1, 2): 3}, "keys must be"),
        (float("nan"), "Out of range float"),
        ({"a": [float("inf")]}, "Out of range float"),
        (np.array([np.nan]), "Out of range float"),
        (np.array([1 + 2j]), "not JSON serializable"),
    ],
    ids=["set", "object", "bytes", "tuple-key", "nan", "inf", "numpy-nan", "complex"],
)
def test_non_serializable_output_raises_unencodable_output(value: Any, message: str) -> None:
    with pytest.raises(UnencodableOutput, match=message):
        dump_json(value)


def test_circular_output_raises_unencodable_output() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(UnencodableOutput):
        dump_json(loop)


def test_encode_response_json() -> None:
    kind, payload = encode_response(wire.KIND_JSON, False, {"y": np.array([1, 2])})
    assert (kind, payload) == (wire.KIND_JSON, b'{"y": [1, 2]}')


# -- tensor responses --------------------------------------------------------------


def test_tensor_response_encodes_each_output() -> None:
    kind, payload = encode_response(
        wire.KIND_TENSORS, False, {"y": np.array([1.0, 2.0], dtype=np.float32), "s": ["a", "b"]}
    )
    assert kind == wire.KIND_TENSORS
    assert payload == {
        "y": ["FP32", [2], np.array([1.0, 2.0], dtype="<f4").tobytes()],
        "s": ["BYTES", [2], [b"a", b"b"]],
    }


def test_tensor_response_ignores_lambda_style_and_stringifies_names() -> None:
    kind, payload = encode_response(wire.KIND_TENSORS, True, {1: np.zeros(1, dtype=np.int8)})
    assert kind == wire.KIND_TENSORS
    assert payload == {"1": ["INT8", [1], b"\x00"]}


@pytest.mark.parametrize("output", [[np.zeros(1)], np.zeros(2), None, "y"])
def test_tensor_response_must_be_a_mapping(output: Any) -> None:
    with pytest.raises(UnencodableOutput, match="must return a dict of output name to array"):
        encode_tensors(output)


def test_tensor_response_accepts_any_mapping() -> None:
    assert encode_tensors(OrderedDict(y=np.ones(1, dtype=np.uint8))) == {"y": ["UINT8", [1], b"\x01"]}


def test_unsupported_tensor_output_raises_unencodable_output() -> None:
    with pytest.raises(UnencodableOutput, match="output 'z'"):
        encode_tensors({"z": np.array([1j])})


# -- Lambda-style responses --------------------------------------------------------


def test_lambda_string_body_is_text() -> None:
    """A string is sent as text, whatever it holds: ``application/json`` labels JSON the
    handler returned as a structure (or a content type it set itself)."""
    for body in ("hello", '{"ok": true}'):
        assert encode_response(wire.KIND_JSON, True, {"statusCode": 201, "body": body}) == (
            wire.KIND_HTTP,
            [201, {"content-type": "text/plain; charset=utf-8"}, body.encode()],
        )


def test_lambda_base64_body_without_a_content_type_is_binary() -> None:
    assert encode_lambda({"statusCode": 200, "body": "aGk=", "isBase64Encoded": True}) == [
        200, {"content-type": "application/octet-stream"}, b"hi"
    ]


def test_lambda_headers_are_lowercased_and_stringified_and_win_over_defaults() -> None:
    status, headers, body = encode_lambda(
        {"statusCode": 200, "body": "hi", "headers": {"Content-Type": "text/plain", "X-Count": 3}}
    )
    assert (status, body) == (200, b"hi")
    assert headers == {"content-type": "text/plain", "x-count": "3"}


def test_lambda_base64_body_is_decoded() -> None:
    raw = b"\x89PNG\x00\xff"
    status, headers, body = encode_lambda({
        "statusCode": 200,
        "body": base64.b64encode(raw).decode(),
        "isBase64Encoded": True,
        "headers": {"content-type": "image/png"},
    })
    assert (status, headers, body) == (200, {"content-type": "image/png"}, raw)


def test_lambda_base64_flag_false_keeps_the_text() -> None:
    assert encode_lambda({"statusCode": 200, "body": "aGk=", "isBase64Encoded": False})[2] == b"aGk="


@pytest.mark.parametrize("body", ["not base64!", "aGk", "\u00e9"])
def test_lambda_invalid_base64_body_is_unencodable(body: str) -> None:
    with pytest.raises(UnencodableOutput, match="not valid base64"):
        encode_lambda({"statusCode": 200, "body": body, "isBase64Encoded": True})


def test_lambda_bytes_body_defaults_to_octet_stream() -> None:
    assert encode_lambda({"statusCode": 200, "body": b"\x00\x01"}) == [
        200, {"content-type": "application/octet-stream"}, b"\x00\x01"
    ]


def test_lambda_missing_or_null_body() -> None:
    text = {"content-type": "text/plain; charset=utf-8"}  # empty: not a JSON document
    assert encode_lambda({"statusCode": 204, "body": None}) == [204, text, b""]
    assert encode_lambda({"statusCode": 200}) == [200, text, b""]


def test_lambda_structured_body_is_json_encoded() -> None:
    status, headers, body = encode_lambda({"statusCode": 202, "body": {"scores": np.array([0.5, 1.0])}})
    assert (status, headers) == (202, {"content-type": "application/json"})
    assert json.loads(body) == {"scores": [0.5, 1.0]}


def test_lambda_structured_body_that_is_not_serializable_is_unencodable() -> None:
    with pytest.raises(UnencodableOutput):
        encode_lambda({"statusCode": 200, "body": {"s": {1, 2}}})


@pytest.mark.parametrize("output", [{"ok": True}, [1, 2], "text", 5, None, {"status": 404}])
def test_non_lambda_return_value_is_a_200_json_response(output: Any) -> None:
    kind, payload = encode_response(wire.KIND_JSON, True, output)
    assert kind == wire.KIND_HTTP
    status, headers, body = payload
    assert status == 200
    assert headers == {"content-type": "application/json"}
    assert json.loads(body) == output


def test_non_lambda_return_value_with_numpy_is_a_200_json_response() -> None:
    assert encode_lambda(np.array([1, 2])) == [200, {"content-type": "application/json"}, b"[1, 2]"]


@pytest.mark.parametrize("status", [99, 600, 0, -200, True, False, "200", 200.0, None])
def test_bad_status_code_is_unencodable(status: Any) -> None:
    with pytest.raises(UnencodableOutput, match="statusCode must be an integer HTTP status"):
        encode_lambda({"statusCode": status, "body": ""})


@pytest.mark.parametrize("status", [100, 200, 302, 418, 599])
def test_status_codes_in_range_are_kept(status: int) -> None:
    assert encode_lambda({"statusCode": status})[0] == status


@pytest.mark.parametrize("headers", [["a", "b"], "content-type: x", 3])
def test_lambda_headers_must_be_a_map(headers: Any) -> None:
    with pytest.raises(UnencodableOutput, match="headers must be a map"):
        encode_lambda({"statusCode": 200, "headers": headers})


def test_lambda_response_survives_the_wire() -> None:
    _, payload = encode_response(wire.KIND_JSON, True, {"statusCode": 200, "body": b"\xffraw"})
    frame = wire.encode(messages.Response(messages.RESPONSE, 1, 0, wire.KIND_HTTP, payload))
    response = messages.parse(wire.decode(frame[4:]), messages.TO_SERVER)
    assert isinstance(response, messages.Response)
    assert response.payload == [200, {"content-type": "application/octet-stream"}, b"\xffraw"]
