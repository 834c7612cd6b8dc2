"""Envelope encryption with AES-256-GCM: a fresh data key per object, wrapped by a master key,
and objects of any size sealed as a stream of segments that are each authenticated.

A sealed object is a header and then segments::

    header  = MAGIC (8) | segment size (u32) | nonce prefix (8)
    segment = AES-GCM(data key, nonce = prefix | index (u32), plaintext,
                      aad = header | object id | index (u32) | last (u8))  -> ciphertext | tag

Every segment carries a 16-byte tag, so a change to any byte, a reordering of segments, a
truncation at a segment boundary (the last segment must say it is the last) or an object
moved to another id fails to decrypt. A data key seals one object only, so its nonces never
repeat. Data keys are wrapped with AES-GCM under the master key, the object id as AAD.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from stratus.errors import IntegrityError

__all__ = ["IntegrityError"]  # re-exported: what a failed decryption raises

MAGIC = b"STRENC\x00\x01"
SEGMENT = 1 << 20  # plaintext bytes per segment
TAG = 16
KEY_BYTES = 32  # AES-256
_HEADER = struct.Struct(">8sI8s")
HEADER_SIZE = _HEADER.size
_WRAP_NONCE = 12
_WRAP_AAD = b"stratus/data-key/v1\x00"


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A data key encrypted under the master key ``kid``: what is stored beside an object."""

    kid: str
    sealed: bytes = b""  # nonce | encrypted key | tag

    def to_json(self) -> str:
        return json.dumps({"v": 1, "kid": self.kid, "key": base64.b64encode(self.sealed).decode()})

    @classmethod
    def from_json(cls, text: str) -> WrappedKey:
        try:
            data = json.loads(text)
            return cls(str(data["kid"]), base64.b64decode(data["key"], validate=True))
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(f"unreadable wrapped data key ({exc})") from None


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def derive_key(master: bytes, label: bytes) -> bytes:
    """A key for one purpose (``label``, e.g. ``b"stratus/audit-checkpoint/v1"``), derived from
    the master key with HKDF-SHA256: it reveals nothing of the master key or of other labels'."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=label).derive(master)


def wrap_key(master: bytes, kid: str, data_key: bytes, object_id: str) -> WrappedKey:
    nonce = os.urandom(_WRAP_NONCE)
    aad = _WRAP_AAD + object_id.encode()
    return WrappedKey(kid, nonce + AESGCM(master).encrypt(nonce, data_key, aad))


def unwrap_key(master: bytes, wrapped: WrappedKey, object_id: str) -> bytes:
    nonce, body = wrapped.sealed[:_WRAP_NONCE], wrapped.sealed[_WRAP_NONCE:]
    try:
        data_key = AESGCM(master).decrypt(nonce, body, _WRAP_AAD + object_id.encode())
    except InvalidTag:
        raise IntegrityError(f"its data key fails authentication under master key "
                             f"{wrapped.kid}") from None
    if len(data_key) != KEY_BYTES:
        raise IntegrityError("its data key has the wrong length")
    return data_key


def _nonce(prefix: bytes, index: int) -> bytes:
    return prefix + index.to_bytes(4, "big")


def _aad(header: bytes, object_id: bytes, index: int, last: bool) -> bytes:
    return header + object_id + index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


class Sealer:
    """Encrypts a stream fed in pieces of any size. ``header`` goes first; then whatever
    ``update`` and ``finish`` return, in order. A full segment is held back until more data
    arrives, since only the end of the stream tells which segment is the last."""

    def __init__(self, data_key: bytes, object_id: str, segment: int = SEGMENT) -> None:
        if not 0 < segment < 1 << 32:
            raise ValueError("segment size out of range")
        self._aead = AESGCM(data_key)
        self._prefix = os.urandom(8)
        self.header = _HEADER.pack(MAGIC, segment, self._prefix)
        self._object_id = object_id.encode()
        self._segment = segment
        self._pending = bytearray()
        self._index = 0
        self.plaintext_bytes = 0

    def _seal(self, data: bytes | bytearray | memoryview, last: bool) -> bytes:
        sealed = self._aead.encrypt(_nonce(self._prefix, self._index), data,
                                    _aad(self.header, self._object_id, self._index, last))
        self._index += 1
        return sealed

    def update(self, data: bytes) -> bytes:
        self.plaintext_bytes += len(data)
        self._pending += data
        out = []
        start = 0
        with memoryview(self._pending) as view:
            # Strictly more than one segment left: the one held back may yet be the last.
            while len(view) - start > self._segment:
                out.append(self._seal(view[start : start + self._segment], last=False))
                start += self._segment
        del self._pending[:start]
        return b"".join(out)

    def finish(self) -> bytes:
        sealed = self._seal(self._pending, last=True)
        self._pending = bytearray()
        return sealed


def sealed_size(plaintext: int, segment: int = SEGMENT) -> int:
    segments = max(1, -(-plaintext // segment))
    return HEADER_SIZE + plaintext + segments * TAG


def plaintext_size(sealed: int, segment: int = SEGMENT) -> int | None:
    """The plaintext length that a sealed object of ``sealed`` bytes holds; None if no
    plaintext length seals to exactly that many bytes (it was truncated or padded)."""
    body = sealed - HEADER_SIZE
    if body < TAG:
        return None
    segments = -(-body // (segment + TAG))
    last = body - (segments - 1) * (segment + TAG)
    if last < TAG:
        return None
    return body - segments * TAG


def read_header(handle: BinaryIO) -> tuple[bytes, int, bytes]:
    header = handle.read(HEADER_SIZE)
    if len(header) != HEADER_SIZE:
        raise IntegrityError("too short to hold a header")
    magic, segment, prefix = _HEADER.unpack(header)
    if magic != MAGIC:
        raise IntegrityError("not an encrypted Stratus object")
    if segment == 0:
        raise IntegrityError("a header naming a zero segment size")
    return header, segment, prefix


def open_segments(handle: BinaryIO, size: int, data_key: bytes, object_id: str) -> Iterator[bytes]:
    """The plaintext of a sealed object read from ``handle`` (``size`` bytes long), one
    segment at a time. Each segment is authenticated before it is yielded, so a caller never
    sees a byte that was not sealed under this key and id, in this place."""
    header, segment, prefix = read_header(handle)
    aead = AESGCM(data_key)
    body = size - HEADER_SIZE
    count = max(1, -(-body // (segment + TAG)))
    if plaintext_size(size, segment) is None:
        raise IntegrityError(f"truncated or padded: no plaintext seals to {size} bytes")
    oid = object_id.encode()
    for index in range(count):
        last = index == count - 1
        chunk = handle.read(segment + TAG if not last else body - index * (segment + TAG))
        try:
            yield aead.decrypt(_nonce(prefix, index), chunk, _aad(header, oid, index, last))
        except InvalidTag:
            raise IntegrityError(f"segment {index + 1} of {count} fails authentication") from None


def seal(data_key: bytes, object_id: str, plaintext: bytes) -> bytes:
    """A small object sealed in one go (a secret's value)."""
    sealer = Sealer(data_key, object_id)
    return sealer.header + sealer.update(plaintext) + sealer.finish()


def unseal(data_key: bytes, object_id: str, sealed: bytes) -> bytes:
    return b"".join(open_segments(io.BytesIO(sealed), len(sealed), data_key, object_id))


class PlainReader(io.RawIOBase):
    """A file-like view of ``open_segments``' plaintext (for tarfile's stream mode), hashing
    what passes through."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._piece = b""
        self._offset = 0
        self.hasher = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while self._offset >= len(self._piece):
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self.hasher.update(piece)
            self._piece, self._offset = piece, 0
        count = min(len(buffer), len(self._piece) - self._offset)
        buffer[:count] = self._piece[self._offset : self._offset + count]
        self._offset += count
        return count

    def drain(self) -> str:
        """Read what the consumer left (gzip's trailer), then the digest of everything."""
        for piece in self._pieces:
            self.hasher.update(piece)
        return self.hasher.hexdigest()
