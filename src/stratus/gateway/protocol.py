"""The HTTP protocol the server runs: uvicorn's httptools protocol plus the limits it lacks, so
that slow or bloated clients cannot hold the server. A client must send its request headers
within ``header_timeout_s`` (uvicorn has no deadline until the first response) and in at most
``max_header_bytes`` (httptools takes any amount), and must keep its body coming, with no gap
over ``body_timeout_s``. One that does not gets a 408 (or 431) and the connection is closed.

Deadlines are checked by one sweep a second over the open connections: a request only
records its deadline, since a timer per request costs the hot path microseconds.

A response's header block is held until its body follows, so that a whole answer leaves in one
write (uvicorn writes the two apart: two system calls and two TCP segments per answer).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

log = logging.getLogger("stratus.gateway")

SWEEP_S = 1.0
_WHOLE = b"\r\ncontent-length: "  # in a header block as uvicorn writes it (names lowered)
_HEADERS, _BODY = 1, 2  # what the connection is waiting for the client to send


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout_s = 10.0
    body_timeout_s = 30.0
    max_header_bytes = 64 * 1024
    _swept: set[int] = set()  # id() of the server states whose connections a sweep visits

    _waiting = 0  # 0: nothing asked of the client (handling, or idle on keep-alive)
    _deadline = 0.0
    _header_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._expect(_HEADERS, self.header_timeout_s)
        if id(self.server_state) not in self._swept:
            self._swept.add(id(self.server_state))
            self.loop.call_later(SWEEP_S, _sweep, self.loop, self.connections)

    def _expect(self, what: int, timeout: float) -> None:
        self._waiting = what
        self._deadline = self.loop.time() + timeout

    def data_received(self, data: bytes) -> None:
        if self._waiting == _BODY:
            super().data_received(data)
            return
        self._header_bytes += len(data)  # what arrives before a request's headers are complete
        super().data_received(data)
        if self._header_bytes > self.max_header_bytes and self._waiting != _BODY \
                and not self.transport.is_closing():
            self._refuse(431, "headers_too_large",
                         f"request headers exceed the limit of {self.max_header_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._expect(_HEADERS, self.header_timeout_s)

    def on_headers_complete(self) -> None:
        self._header_bytes = 0
        self._expect(_BODY, self.body_timeout_s)
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and self._close_after:
            cycle.keep_alive = False
        if cycle is not None:  # its task has not run yet: it writes through this
            cycle.transport = HeadWithBody(  # type: ignore[assignment]
                self.transport, cycle.scope["method"] == "HEAD")

    def on_body(self, body: bytes) -> None:
        self._deadline = self.loop.time() + self.body_timeout_s
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._waiting = 0
        super().on_message_complete()

    def shutdown(self) -> None:
        takeover = getattr(self.server_state, "stratus_takeover", None)
        if takeover is None:
            super().shutdown()
        elif (self.cycle is None or self.cycle.response_complete) and not self._header_bytes \
                and not self.pipeline and not self.transport.get_write_buffer_size():
            takeover.take(self.transport)  # idle: the next version serves what comes next
        elif self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # answered with "connection: close", then closed
        else:  # a request begun but not yet read whole: answered, then closed
            self._close_after = True

    _close_after = False

    def check_deadline(self, now: float) -> None:
        if not self._waiting or now < self._deadline or self.transport.is_closing():
            return
        cycle = self.cycle if self._waiting == _BODY else None
        if cycle is not None and (self.flow.read_paused or cycle.waiting_for_100_continue
                                  or cycle.response_complete):
            # The server is the one not reading (the app has not asked for the body yet),
            # or has already answered: only a stalled client is timed out.
            self._deadline = now + self.body_timeout_s
            return
        if cycle is None and self.cycle is not None and not self.cycle.response_complete:
            self._deadline = now + self.header_timeout_s  # the next request waits on this one
            return
        if cycle is None:
            self._refuse(408, "body_timeout", f"request headers not received within "
                                              f"{self.header_timeout_s:g}s")
        else:
            self._refuse(408, "body_timeout", f"request body stalled: nothing received for "
                                              f"{self.body_timeout_s:g}s")

    def _refuse(self, status: int, error_type: str, message: str) -> None:
        """Answer in the contract's error shape, unless a response has started, and close."""
        self._waiting = 0
        cycle = self.cycle if self.cycle is not None and not self.cycle.response_complete else None
        if cycle is None or not cycle.response_started:
            state: dict[str, Any] = (self.scope or {}).get("state") or {}
            request_id = str(state.get("request_id", ""))
            body = json.dumps({"error": {"type": error_type, "message": message,
                                         "request_id": request_id}}).encode()
            self.transport.write(b"".join([
                STATUS_LINE[status], b"content-type: application/json\r\n",
                b"content-length: ", str(len(body)).encode(), b"\r\n",
                b"connection: close\r\n\r\n", body]))
        if cycle is not None:  # the app's receive now says the client is gone
            cycle.disconnected = True
            cycle.message_event.set()
        log.info("closing a connection from %s: %s", _peer(self.client), message)
        self.transport.close()


class HeadWithBody:
    """One response's transport: the header block of a whole answer (one with a
    ``content-length``) is held, and goes out with the body, which uvicorn writes next, in the
    same step. A stream's headers (chunked) and a HEAD answer's (no body follows) go at once."""

    __slots__ = ("_held", "_started", "_transport")

    def __init__(self, transport: asyncio.Transport, head: bool) -> None:
        self._transport = transport
        self._held: bytes | None = None
        self._started = head  # a HEAD answer's headers are its last write: nothing to hold

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            data = held + data
        elif not self._started:
            self._started = True
            if _WHOLE in data:
                self._held = data
                return
        self._transport.write(data)

    def close(self) -> None:
        held, self._held = self._held, None
        if held is not None:  # the app ended without a body: what it sent still goes
            self._transport.write(held)
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, ...
        return getattr(self._transport, name)


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "an unknown peer"


def _sweep(loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
    now = loop.time()
    for connection in list(connections):
        if isinstance(connection, GuardedHttpToolsProtocol):
            connection.check_deadline(now)
    loop.call_later(SWEEP_S, _sweep, loop, connections)


def guarded_protocol(header_timeout_s: float, body_timeout_s: float,
                     max_header_bytes: int) -> type[GuardedHttpToolsProtocol]:
    """The protocol class to hand uvicorn (``http=``), with this server's limits."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {
        "header_timeout_s": header_timeout_s, "body_timeout_s": body_timeout_s,
        "max_header_bytes": max_header_bytes, "_swept": set()})
