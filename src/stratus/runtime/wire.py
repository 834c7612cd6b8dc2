"""The wire format between the server, zygotes and replicas: length-prefixed msgpack frames.

A frame is a 4-byte big-endian length followed by one msgpack array whose first
element is the message type (the types and their fields are in runtime/messages.py).
Tensors travel as msgpack ``bin`` (raw bytes).
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import msgpack

MAX_FRAME = 1 << 31  # 2 GiB: a guard against a corrupt length, not a payload limit

# Payload kinds, both directions.
KIND_JSON = 0  # payload: JSON bytes
KIND_TENSORS = 1  # payload: {name: [datatype, shape, data]}; data is bytes or a list for BYTES
KIND_HTTP = 2  # payload: [status, headers, body bytes] (Lambda-style responses)
KIND_PROGRESS = 3  # a CHUNK's payload: [fraction, message or None], from ``ctx.progress``
KIND_STARTED = 4  # a CHUNK with no payload: the replica took the request for its handler

_HEADER = struct.Struct(">I")
_packer = msgpack.Packer(use_bin_type=True)


def encode(message: tuple[Any, ...] | list[Any]) -> bytes:
    body: bytes = _packer.pack(message)
    return _HEADER.pack(len(body)) + body


def decode(body: bytes | memoryview) -> list[Any]:
    message = msgpack.unpackb(body, raw=False, use_list=True, strict_map_key=False)
    if not isinstance(message, list) or not message:
        raise ValueError("frame is not a non-empty msgpack array")
    return message


class FrameDecoder:
    """Incremental decoder: feed it bytes as they arrive, get whole frames back, each the
    decoded array that ``messages.parse`` turns into its typed message."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[list[Any]]:
        buffer = self._buffer
        buffer += data
        frames: list[list[Any]] = []
        offset = 0
        available = len(buffer)
        while available - offset >= 4:
            (length,) = _HEADER.unpack_from(buffer, offset)
            if length > MAX_FRAME:
                raise ValueError(f"frame of {length} bytes exceeds the limit")
            end = offset + 4 + length
            if end > available:
                break
            with memoryview(buffer) as view:
                frames.append(decode(view[offset + 4 : end]))
            offset = end
        if offset:
            del buffer[:offset]
        return frames

    def pending(self) -> bytes:
        """The bytes of a frame begun but not yet whole."""
        return bytes(self._buffer)


class BlockingChannel:
    """Frames over a blocking socket: used by the zygotes, which must stay thread-free."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._decoder = FrameDecoder()
        self._pending: list[list[Any]] = []

    @classmethod
    def connect(cls, path: str) -> BlockingChannel:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        return cls(sock)

    def send(self, message: tuple[Any, ...]) -> None:
        self.sock.sendall(encode(message))

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive_available(self) -> list[list[Any]] | None:
        """Read once (the socket must be readable); None means the peer closed."""
        data = self.sock.recv(1 << 20)
        if not data:
            return None
        return self._decoder.feed(data)

    def receive(self) -> list[Any] | None:
        """Block until one whole frame arrives; None means the peer closed."""
        while not self._pending:
            frames = self.receive_available()
            if frames is None:
                return None
            self._pending.extend(frames)
        return self._pending.pop(0)

    def close(self) -> None:
        self.sock.close()
