"""A whole answer's header block waits for its body and leaves in the same write; a stream's
headers, a HEAD answer's and an unfinished answer's go out without waiting. On a real socket
pair and the loop's real transport."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from stratus.gateway.protocol import HeadWithBody

WHOLE = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 4\r\n\r\n"
STREAM = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


class Pair:
    def __init__(self, transport: asyncio.Transport, reader: socket.socket) -> None:
        self.transport = transport
        self.reader = reader

    def arrived(self) -> bytes:
        """What the peer can read now, without waiting."""
        try:
            return self.reader.recv(65536)
        except BlockingIOError:
            return b""


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    transport, _ = await asyncio.get_running_loop().connect_accepted_socket(
        asyncio.Protocol, ours)
    yield Pair(transport, theirs)  # type: ignore[arg-type]
    transport.close()
    theirs.close()


async def test_a_whole_answer_leaves_in_one_write(pair: Pair) -> None:
    writer = HeadWithBody(pair.transport, head=False)
    writer.write(WHOLE)
    await asyncio.sleep(0.01)
    assert pair.arrived() == b""  # held for the body
    writer.write(b'{"a"')
    writer.write(b"")
    await asyncio.sleep(0.01)
    assert pair.arrived() == WHOLE + b'{"a"'


async def test_a_streams_headers_go_at_once(pair: Pair) -> None:
    writer = HeadWithBody(pair.transport, head=False)
    writer.write(STREAM)
    await asyncio.sleep(0.01)
    assert pair.arrived() == STREAM
    writer.write(b"5\r\nhello\r\n")
    await asyncio.sleep(0.01)
    assert pair.arrived() == b"5\r\nhello\r\n"


async def test_a_head_answers_headers_go_at_once(pair: Pair) -> None:
    HeadWithBody(pair.transport, head=True).write(WHOLE)
    await asyncio.sleep(0.01)
    assert pair.arrived() == WHOLE


async def test_a_held_header_block_goes_before_the_close(pair: Pair) -> None:
    writer = HeadWithBody(pair.transport, head=False)
    writer.write(WHOLE)
    writer.close()
    await asyncio.sleep(0.01)
    assert pair.arrived() == WHOLE
    assert writer.is_closing()  # the rest is the transport's own
