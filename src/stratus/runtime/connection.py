"""The server's end of a framed connection from a zygote or replica.

The first frame names the peer (a HELLO); the acceptor turns it into an endpoint that
receives every later frame.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, cast

from stratus.runtime import wire
from stratus.runtime.messages import (
    TO_SERVER,
    JobReply,
    Load,
    ToReplica,
    ToRevisionZygote,
    ToServer,
    parse,
)

_UCRED = struct.Struct("3i")  # pid, uid, gid


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int


class Endpoint(Protocol):
    def on_message(self, message: ToServer) -> None: ...

    def on_close(self) -> None: ...


class FramedConnection(asyncio.Protocol):
    """One accepted connection; frames go to the endpoint that its HELLO produced."""

    def __init__(self, accept: Callable[[ToServer, FramedConnection], Endpoint | None]) -> None:
        self._accept = accept
        self._decoder = wire.FrameDecoder()
        self.transport: asyncio.Transport | None = None
        self.endpoint: Endpoint | None = None
        # Frames sent after the first of a loop iteration, written together at the next one:
        # a batch of invocations dispatched at once costs two writes, not one per frame.
        self._held: list[bytes] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:  # driven by hand, outside a loop: each frame goes at once
            self._loop = None

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._decoder.feed(data)
        except ValueError:
            self.close()
            return
        for frame in frames:
            try:
                message = parse(frame, TO_SERVER)
            except ValueError:
                self.close()
                return
            endpoint = self.endpoint
            if endpoint is None:
                # A first frame of a type the server does not read names nobody.
                endpoint = self.endpoint = None if message is None else self._accept(message, self)
                if endpoint is None:
                    self.close()
                    return
            elif message is not None:
                endpoint.on_message(message)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.endpoint is not None:
            self.endpoint.on_close()

    def peer(self) -> Peer | None:
        """The process at the other end, as the kernel recorded it when it connected."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is None:
            return None
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        except OSError:
            return None
        return Peer(*_UCRED.unpack(raw))

    def send(self, message: Load | ToRevisionZygote | ToReplica | JobReply) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._held is not None:
            self._held.append(wire.encode(message))
            return
        transport.write(wire.encode(message))  # the first goes at once: no wait when idle
        if self._loop is not None:
            self._held = []
            self._loop.call_soon(self._release)

    def _release(self) -> None:
        held, self._held = self._held, None
        transport = self.transport
        if held and transport is not None and not transport.is_closing():
            transport.write(b"".join(held))

    def detach(self) -> tuple[int, bytes]:
        """Hand the socket on (a takeover): a descriptor that survives ``exec``, and the bytes
        of a frame begun but not whole. This end stops reading and forgets its endpoint; the
        peer sees nothing, since the descriptor keeps the socket open."""
        transport = self.transport
        assert transport is not None
        transport.pause_reading()  # what arrives from now on waits in the socket for the next
        self._release()
        fd = os.dup(transport.get_extra_info("socket").fileno())
        os.set_inheritable(fd, True)
        self.endpoint = None  # its close is not the peer's end
        transport.close()
        return fd, self._decoder.pending()

    @classmethod
    async def adopt(cls, endpoint: Callable[[FramedConnection], Endpoint], fd: int,
                    pending: bytes) -> FramedConnection:
        """A connection a server before this one accepted and handed on with ``detach``."""
        connection = cls(lambda hello, _: None)
        connection.endpoint = endpoint(connection)
        await asyncio.get_running_loop().connect_accepted_socket(
            lambda: connection, socket.socket(fileno=fd))
        if pending:
            connection.data_received(pending)
        return connection

    def close(self) -> None:
        if self.transport is not None:
            self._release()  # what was sent goes before the close
            self.transport.close()
