"""Envelope encryption: sealing round trips at every size, and every kind of damage (any
byte, a segment dropped, reordered or moved, a wrong key or id) fails authentication."""

from __future__ import annotations

import io
import os
import random

import pytest

from stratus.errors import IntegrityError
from stratus.security.crypto import (
    HEADER_SIZE,
    SEGMENT,
    TAG,
    Sealer,
    WrappedKey,
    new_data_key,
    open_segments,
    plaintext_size,
    seal,
    sealed_size,
    unseal,
    unwrap_key,
    wrap_key,
)

SMALL = 64  # a small segment size, so that objects of a few hundred bytes span segments


def sealed(data: bytes, key: bytes, object_id: str = "obj", segment: int = SMALL,
           piece: int | None = None) -> bytes:
    sealer = Sealer(key, object_id, segment)
    pieces = [data[i : i + piece] for i in range(0, len(data), piece)] if piece else [data]
    return sealer.header + b"".join(sealer.update(p) for p in pieces) + sealer.finish()


def opened(blob: bytes, key: bytes, object_id: str = "obj") -> bytes:
    return b"".join(open_segments(io.BytesIO(blob), len(blob), key, object_id))


@pytest.mark.parametrize("size", [0, 1, SMALL - 1, SMALL, SMALL + 1, 2 * SMALL, 5 * SMALL + 7])
def test_round_trip_at_every_boundary(size: int) -> None:
    key = new_data_key()
    data = os.urandom(size)
    blob = sealed(data, key)
    assert len(blob) == sealed_size(size, SMALL)
    assert plaintext_size(len(blob), SMALL) == size
    assert opened(blob, key) == data


def test_pieces_of_any_size_seal_alike() -> None:
    key = new_data_key()
    data = os.urandom(10 * SMALL + 3)
    for piece in (1, 7, SMALL, SMALL + 1, 1000):
        assert opened(sealed(data, key, piece=piece), key) == data


def test_default_segments_and_the_one_shot_helpers() -> None:
    key = new_data_key()
    data = os.urandom(2 * SEGMENT + 5)
    blob = seal(key, "big", data)
    assert len(blob) == HEADER_SIZE + len(data) + 3 * TAG
    assert unseal(key, "big", blob) == data
    assert data not in blob and data[:64] not in blob


def test_two_seals_of_the_same_bytes_differ() -> None:
    key = new_data_key()
    assert seal(key, "x", b"same") != seal(key, "x", b"same")  # a fresh nonce prefix each time


def test_every_flipped_byte_is_detected() -> None:
    key = new_data_key()
    blob = sealed(os.urandom(3 * SMALL + 10), key)
    for position in range(len(blob)):
        damaged = bytearray(blob)
        damaged[position] ^= 0x01
        with pytest.raises(IntegrityError):
            opened(bytes(damaged), key)


def test_truncation_padding_reordering_are_detected() -> None:
    key = new_data_key()
    blob = sealed(os.urandom(3 * SMALL), key)  # three full segments, the last one final
    full = SMALL + TAG
    body = blob[HEADER_SIZE:]
    segments = [body[i : i + full] for i in range(0, len(body), full)]
    assert len(segments) == 3
    header = blob[:HEADER_SIZE]
    cases = {
        "last segment dropped": header + b"".join(segments[:2]),
        "first segment dropped": header + b"".join(segments[1:]),
        "two segments swapped": header + segments[1] + segments[0] + segments[2],
        "a segment repeated": header + segments[0] + segments[0] + segments[2],
        "tail cut": blob[:-1],
        "bytes appended": blob + b"\0",
        "a whole segment appended": blob + segments[2],
        "header only": header,
        "empty": b"",
    }
    for what, damaged in cases.items():
        with pytest.raises(IntegrityError):
            opened(damaged, key)
        assert what


def test_a_truncation_mid_stream_never_yields_a_bad_byte() -> None:
    """Segments before the damage come out authenticated; the damaged one never does."""
    key = new_data_key()
    data = os.urandom(3 * SMALL)
    blob = bytearray(sealed(data, key))
    blob[HEADER_SIZE + SMALL + TAG + 5] ^= 0xFF  # inside segment 2
    seen = []
    with pytest.raises(IntegrityError, match="segment 2 of 3 fails authentication"):
        for piece in open_segments(io.BytesIO(bytes(blob)), len(blob), key, "obj"):
            seen.append(piece)
    assert seen == [data[:SMALL]]


def test_wrong_key_or_object_id_fails() -> None:
    key = new_data_key()
    blob = sealed(b"hello world", key, object_id="a")
    with pytest.raises(IntegrityError):
        opened(blob, new_data_key(), "a")
    with pytest.raises(IntegrityError):
        opened(blob, key, "b")  # moved under another name


def test_not_an_encrypted_object() -> None:
    with pytest.raises(IntegrityError, match="not an encrypted Stratus object"):
        opened(b"plain text that is long enough to hold a header", new_data_key())
    with pytest.raises(IntegrityError, match="too short"):
        opened(b"short", new_data_key())


def test_wrapping_binds_the_master_key_and_the_object() -> None:
    master, other = new_data_key(), new_data_key()
    data_key = new_data_key()
    wrapped = wrap_key(master, "k1", data_key, "blob-a")
    assert data_key not in wrapped.sealed
    assert unwrap_key(master, wrapped, "blob-a") == data_key
    restored = WrappedKey.from_json(wrapped.to_json())
    assert restored == wrapped and unwrap_key(master, restored, "blob-a") == data_key
    with pytest.raises(IntegrityError, match="fails authentication under master key k1"):
        unwrap_key(other, wrapped, "blob-a")
    with pytest.raises(IntegrityError):
        unwrap_key(master, wrapped, "blob-b")  # a key file copied beside another blob
    damaged = bytearray(wrapped.sealed)
    damaged[random.randrange(len(damaged))] ^= 0x10
    with pytest.raises(IntegrityError):
        unwrap_key(master, WrappedKey("k1", bytes(damaged)), "blob-a")
    with pytest.raises(IntegrityError, match="unreadable wrapped data key"):
        WrappedKey.from_json("{not json")
