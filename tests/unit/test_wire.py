"""Unit tests for the length-prefixed msgpack wire format and its incremental decoder."""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stratus.runtime import messages, wire
from stratus.runtime.wire import MAX_FRAME, FrameDecoder, decode, encode

MESSAGES: list[list[Any]] = [
    [messages.HELLO_REPLICA, "r-1", 4242, True, 12.5, None],
    [messages.REQUEST, 7, wire.KIND_TENSORS, {"x": ["FP32", [2], b"\x00\x00\x80?\x00\x00\x00@"]}, {}],
    [messages.RESPONSE, 7, 0, wire.KIND_JSON, b'{"ok": true}'],
    [messages.ERROR, 8, 500, "handler_error", "boom \u2603", "Traceback ..."],
    [messages.HEARTBEAT, 0, 123_456_789],
    [messages.SHUTDOWN],
    [messages.REQUEST, 9, wire.KIND_TENSORS, {"s": ["BYTES", [3], [b"", b"\xff\x00", b"abc"]]}, {"a": 1}],
]


def test_encode_prefixes_a_big_endian_length() -> None:
    frame = encode([messages.CANCEL, 5])
    (length,) = struct.unpack(">I", frame[:4])
    assert length == len(frame) - 4
    assert msgpack.unpackb(frame[4:]) == [messages.CANCEL, 5]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: f"type-{m[0]}")
def test_encode_decode_round_trip(message: list[Any]) -> None:
    assert decode(encode(message)[4:]) == message


def test_bytes_stay_bytes_and_strings_stay_strings() -> None:
    message = [messages.RESPONSE, 1, 0, wire.KIND_HTTP, [200, {"content-type": "x"}, b"\x00\xffbin"]]
    decoded = decode(encode(message)[4:])
    body = decoded[4][2]
    assert isinstance(body, bytes) and body == b"\x00\xffbin"
    assert isinstance(decoded[4][1]["content-type"], str)


def test_tuples_become_lists_and_integer_map_keys_survive() -> None:
    decoded = decode(encode([messages.LOAD, (1, 2), {1: "one", "two": 2}])[4:])
    assert decoded == [messages.LOAD, [1, 2], {1: "one", "two": 2}]


def test_decode_accepts_a_memoryview() -> None:
    frame = encode([messages.STOP, 2.5])
    assert decode(memoryview(frame)[4:]) == [messages.STOP, 2.5]


@pytest.mark.parametrize("payload", [msgpack.packb(1), msgpack.packb([]), msgpack.packb({"a": 1}),
                                     msgpack.packb("text")])
def test_decode_rejects_anything_but_a_non_empty_array(payload: bytes) -> None:
    with pytest.raises(ValueError, match="non-empty msgpack array"):
        decode(payload)


def test_decode_rejects_truncated_msgpack() -> None:
    with pytest.raises(ValueError):
        decode(msgpack.packb([1, 2, 3])[:-1])


def test_decoder_returns_nothing_until_a_frame_is_complete() -> None:
    decoder = FrameDecoder()
    frame = encode(MESSAGES[1])
    assert decoder.feed(b"") == []
    assert decoder.feed(frame[:2]) == []  # not even a whole header
    assert decoder.feed(frame[2:-1]) == []  # header, but the body is one byte short
    assert decoder.feed(frame[-1:]) == [MESSAGES[1]]
    assert decoder.feed(b"") == []


def test_decoder_yields_several_frames_from_one_chunk_in_order() -> None:
    decoder = FrameDecoder()
    stream = b"".join(encode(m) for m in MESSAGES)
    assert decoder.feed(stream) == MESSAGES


def test_decoder_keeps_the_tail_of_a_partial_frame_across_feeds() -> None:
    decoder = FrameDecoder()
    first, second = encode(MESSAGES[0]), encode(MESSAGES[2])
    assert decoder.feed(first + second[:5]) == [MESSAGES[0]]
    assert decoder.feed(second[5:] + first) == [MESSAGES[2], MESSAGES[0]]


def test_decoder_handles_a_split_at_every_byte_boundary() -> None:
    stream = b"".join(encode(m) for m in MESSAGES[:4])
    for cut in range(len(stream) + 1):
        decoder = FrameDecoder()
        received = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
        assert received == MESSAGES[:4], f"split at byte {cut}"


def test_decoder_handles_two_splits_at_every_pair_of_boundaries() -> None:
    stream = encode(MESSAGES[0]) + encode(MESSAGES[6])
    for a in range(0, len(stream) + 1, 3):
        for b in range(a, len(stream) + 1, 2):
            decoder = FrameDecoder()
            chunks = (stream[:a], stream[a:b], stream[b:])
            received = [m for chunk in chunks for m in decoder.feed(chunk)]
            assert received == [MESSAGES[0], MESSAGES[6]], (a, b)


def test_decoder_fed_one_byte_at_a_time() -> None:
    decoder = FrameDecoder()
    stream = b"".join(encode(m) for m in MESSAGES)
    received: list[list[Any]] = []
    for i in range(len(stream)):
        received.extend(decoder.feed(stream[i : i + 1]))
    assert received == MESSAGES


def test_large_bytes_payload_survives_chunking() -> None:
    blob = bytes(range(256)) * 4096  # 1 MiB
    message = [messages.RESPONSE, 3, 0, wire.KIND_TENSORS, {"y": ["UINT8", [len(blob)], blob]}]
    stream = encode(message)
    decoder = FrameDecoder()
    received: list[list[Any]] = []
    for start in range(0, len(stream), 65_536):
        received.extend(decoder.feed(stream[start : start + 65_536]))
    assert received == [message]
    assert received[0][4]["y"][2] == blob


@pytest.mark.parametrize("length", [MAX_FRAME + 1, 0xFFFFFFFF])
def test_oversized_length_header_raises(length: int) -> None:
    decoder = FrameDecoder()
    with pytest.raises(ValueError, match="exceeds the limit"):
        decoder.feed(struct.pack(">I", length))


def test_oversized_length_after_a_good_frame_raises() -> None:
    decoder = FrameDecoder()
    with pytest.raises(ValueError):
        decoder.feed(encode([messages.SHUTDOWN]) + struct.pack(">I", 0xFFFFFFFF))


def test_length_at_the_limit_waits_for_more_data() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(struct.pack(">I", MAX_FRAME) + b"\x91") == []


def test_frame_that_is_not_an_array_raises_value_error() -> None:
    body = msgpack.packb({"type": 1})
    with pytest.raises(ValueError):
        FrameDecoder().feed(struct.pack(">I", len(body)) + body)


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=8) | st.integers(-100, 100), children, max_size=5),
    max_leaves=20,
)
messages_strategy = st.lists(
    st.lists(msgpack_values, min_size=1, max_size=5), min_size=1, max_size=6
)


@settings(max_examples=40)
@given(messages=messages_strategy, cuts=st.lists(st.integers(min_value=0), max_size=8))
def test_property_any_chunking_yields_the_same_messages(
    messages: list[list[Any]], cuts: list[int]
) -> None:
    stream = b"".join(encode(m) for m in messages)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    decoder = FrameDecoder()
    received: list[list[Any]] = []
    previous = 0
    for point in [*points, len(stream)]:
        received.extend(decoder.feed(stream[previous:point]))
        previous = point
    assert received == messages
