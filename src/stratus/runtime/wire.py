"""The wire format between the server, zygotes and replicas: length-prefixed msgpack frames.

A frame is a 4-byte big-endian length followed by one msgpack array whose first
element is the message type. Tensors travel as msgpack ``bin`` (raw bytes).
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import msgpack

MAX_FRAME = 1 << 31  # 2 GiB: a guard against a corrupt length, not a payload limit

# Process identification: the first frame on every connection to the server.
HELLO_PROFILE = 1  # [1, profile_key, pid]
HELLO_REVISION = 2  # [2, code_key, pid, ok, meta_or_error, traceback]
HELLO_REPLICA = 3  # [3, replica_id, pid, ok, init_ms_or_error, traceback]

# Server -> profile zygote.
LOAD = 10  # [10, code_key, load_spec]

# Server -> revision zygote, and its reports.
FORK = 20  # [20, replica_id, replica_config]
KILL = 21  # [21, replica_id, reason]
FORKED = 22  # [22, replica_id, pid]; a profile zygote sends [22, code_key, pid]
EXITED = 23  # [23, replica_id, pid, returncode, reason, out_of_memory]
SHUTDOWN = 24  # [24]

# Server <-> replica data path.
REQUEST = 30  # [30, rid, kind, payload, meta]
RESPONSE = 31  # [31, rid, status, kind, payload]  status 0 = ok
ERROR = 32  # [32, rid, status, error_type, message, traceback]
CANCEL = 33  # [33, rid]
# HEARTBEAT reports (optional, each key too): {"stats": {name: value}, "batch_sizes":
# {method: {batch size: batches run since the last heartbeat}}}
HEARTBEAT = 34  # [34, inflight, rss, pss, charged (bytes), reports]
STOP = 35  # [35, drain_timeout_s]
CHUNK = 36  # [36, rid, kind, payload]: one item of a streamed answer; RESPONSE/ERROR ends it
# Spans the replica finished (observe/spans.py records); sent before the answer they belong to.
SPANS = 37  # [37, [record, ...]]

# Payload kinds, both directions.
KIND_JSON = 0  # payload: JSON bytes
KIND_TENSORS = 1  # payload: {name: [datatype, shape, data]}; data is bytes or a list for BYTES
KIND_HTTP = 2  # payload: [status, headers, body bytes] (Lambda-style responses)

_HEADER = struct.Struct(">I")
_packer = msgpack.Packer(use_bin_type=True)


def encode(message: list[Any]) -> bytes:
    body: bytes = _packer.pack(message)
    return _HEADER.pack(len(body)) + body


def decode(body: bytes | memoryview) -> list[Any]:
    message = msgpack.unpackb(body, raw=False, use_list=True, strict_map_key=False)
    if not isinstance(message, list) or not message:
        raise ValueError("frame is not a non-empty msgpack array")
    return message


class FrameDecoder:
    """Incremental decoder: feed it bytes as they arrive, get whole messages back."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[list[Any]]:
        buffer = self._buffer
        buffer += data
        messages: list[list[Any]] = []
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
                messages.append(decode(view[offset + 4 : end]))
            offset = end
        if offset:
            del buffer[:offset]
        return messages


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

    def send(self, message: list[Any]) -> None:
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
        """Block until one whole message arrives; None means the peer closed."""
        while not self._pending:
            messages = self.receive_available()
            if messages is None:
                return None
            self._pending.extend(messages)
        return self._pending.pop(0)

    def close(self) -> None:
        self.sock.close()
