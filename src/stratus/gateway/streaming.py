"""Streamed answers: an invocation whose items arrive one by one, and the ASGI response that
sends them on as they come. A client that goes away cancels the invocation, which tells the
replica to stop (an LLM sequence leaves its batch at once)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from starlette.types import Receive, Send

from stratus.dispatch.dispatcher import Choice, Dispatcher, Invocation, InvocationResult
from stratus.gateway.http import stratus_headers

_END = object()


class InvocationStream:
    """Runs one invocation, on the revision its adapter chose and checked, in a task and hands
    over its CHUNK items in order."""

    def __init__(self, dispatcher: Dispatcher, choice: Choice, invocation: Invocation) -> None:
        self._items: asyncio.Queue[Any] = asyncio.Queue()
        self.revision: int | None = None
        self.cold_start = False
        self.attempts = 0  # a retry of lost work starts the invocation again, before any item
        # The task starts on the next turn of the loop. Should a route change take the chosen
        # pool out of the split in that instant, the request still gets a free slot there, or
        # queues on the new primary with the pool's held requests (``RevisionPool.moved_to``).
        self.task: asyncio.Task[InvocationResult] = asyncio.create_task(
            dispatcher.run(choice, replace(invocation, on_chunk=self._put, on_start=self._started))
        )
        self.task.add_done_callback(lambda _: self._items.put_nowait(_END))
        self._ended = False

    def _started(self, revision: int, cold_start: bool) -> None:
        self.revision = revision
        self.cold_start = cold_start
        self.attempts += 1

    def headers(self) -> list[tuple[bytes, bytes]]:
        """The contract's revision and cold-start headers, known once a replica took it."""
        if self.revision is None:
            return []
        return stratus_headers(self.revision, self.cold_start, self.attempts)

    def _put(self, kind: int, payload: Any) -> None:
        self._items.put_nowait((kind, payload))

    async def next_item(self) -> tuple[int, Any] | None:
        """The next streamed item, or None once the invocation has ended (then ``result``
        returns its outcome or raises its error)."""
        if self._ended:
            return None
        item = await self._items.get()
        if item is _END:
            self._ended = True
            return None
        kind, payload = item
        return kind, payload

    async def result(self) -> InvocationResult:
        return await self.task

    async def items(self) -> AsyncIterator[tuple[int, Any]]:
        """Every item, then the invocation's error (if it failed) is raised."""
        while (item := await self.next_item()) is not None:
            yield item
        await self.task

    async def close(self) -> None:
        """Cancel the invocation if it still runs; the dispatcher passes that on to the replica."""
        if not self.task.done():
            self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task


@dataclass(slots=True)
class StreamReply:
    """A response whose body is produced piece by piece (server-sent events, NDJSON)."""

    status: int
    body: AsyncIterator[bytes]
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    content_type: bytes = b"text/event-stream"


async def _disconnected(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def send_stream(send: Send, receive: Receive, reply: StreamReply, request_id: bytes) -> None:
    """Send each piece as it is made; stop at once (closing the producer) if the client leaves."""
    headers = [
        (b"content-type", reply.content_type),
        (b"cache-control", b"no-cache"),
        (b"x-request-id", request_id),
        *reply.headers,
    ]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    watcher = asyncio.ensure_future(_disconnected(receive))
    pieces = aiter(reply.body)
    gone = False
    try:
        while True:
            piece = asyncio.ensure_future(anext(pieces))
            await asyncio.wait((piece, watcher), return_when=asyncio.FIRST_COMPLETED)
            if not piece.done():
                gone = True
                piece.cancel()
                with contextlib.suppress(BaseException):
                    await piece
                break
            try:
                data = piece.result()
            except StopAsyncIteration:
                break
            await send({"type": "http.response.body", "body": data, "more_body": True})
        if not gone:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        watcher.cancel()
        close = getattr(reply.body, "aclose", None)
        if close is not None:
            await close()
