"""A replica's acknowledgements of the requests it takes: a handler starts only once the server
can read that it did, even if this process is killed the next instant."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class AckGate:
    """Starts the handler of a request the server asked to acknowledge only once the ack
    has left this process.

    The ack (a CHUNK of kind ``KIND_STARTED``) tells the server that a loss after it may have
    run the handler, and a loss before it did not (retries of lost work). Written while the
    socket is backed up, it would wait in the transport's buffer while the handler already
    ran, and a kill -9 would lose it with the buffer: the server would then resend a request
    whose handler ran. What the kernel holds, the server still reads after this process
    dies, so a start waits until the transport's buffer is empty (``resume_writing``, with a
    high-water mark of 0 while a start waits). When the socket is not backed up, the ack
    goes out at once and so does the handler: this costs nothing then."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.held: dict[int, Callable[[], None]] = {}  # by rid, in arrival order
        self.limits = transport.get_write_buffer_limits()  # (low, high), put back after

    def acknowledged(self, requests: list[tuple[int, bytes, Callable[[], None]]]) -> bool:
        """Write the acks of ``requests`` (rid, ack, start) in one go, and call each one's
        ``start`` once its ack is out; whether that was at once (the socket took them all)."""
        transport = self.transport
        transport.write(b"".join(ack for _, ack, _ in requests))
        if not self.held and transport.get_write_buffer_size() == 0:
            for _, _, start in requests:
                start()
            return True
        first = not self.held
        for rid, _, start in requests:
            self.held[rid] = start
        if first:
            # Paused now (the buffer is not empty), resumed once all of it is in the kernel.
            self.limits = transport.get_write_buffer_limits()
            transport.set_write_buffer_limits(high=0, low=0)
        return False

    def flushed(self) -> None:
        """The transport's buffer went empty (the protocol's ``resume_writing``)."""
        if not self.held:
            return
        low, high = self.limits
        self.transport.set_write_buffer_limits(high=high, low=low)
        held, self.held = self.held, {}
        for start in held.values():
            start()

    def drop(self, rid: int) -> bool:
        """Forget a held request (cancelled before its handler started)."""
        return self.held.pop(rid, None) is not None
