"""The frames the server sends a replica within one loop iteration: the first leaves at once,
the rest together at the next iteration, all in order; a close sends what is held first. On a
real socket pair and the loop's real transport."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from stratus.runtime import wire
from stratus.runtime.connection import FramedConnection
from stratus.runtime.messages import CANCEL, REQUEST, Cancel, Request


class Peer:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.decoder = wire.FrameDecoder()

    def frames(self) -> list[list[Any]]:
        """The frames readable now, without waiting."""
        out: list[list[Any]] = []
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return out
            if not data:
                return out
            out += self.decoder.feed(data)


@pytest.fixture
async def ends() -> AsyncIterator[tuple[FramedConnection, Peer]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX)
    theirs.setblocking(False)
    _, connection = await asyncio.get_running_loop().connect_accepted_socket(
        lambda: FramedConnection(lambda message, conn: None), ours)
    yield connection, Peer(theirs)
    connection.close()
    theirs.close()


def request(rid: int) -> Request:
    return Request(REQUEST, rid, wire.KIND_JSON, b"{}", {"request_id": f"r{rid}"})


async def test_a_burst_costs_two_writes_and_keeps_its_order(
        ends: tuple[FramedConnection, Peer]) -> None:
    connection, peer = ends
    for rid in range(1, 6):
        connection.send(request(rid))
    assert [frame[1] for frame in peer.frames()] == [1]  # the first, at once
    await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    assert [frame[1] for frame in peer.frames()] == [2, 3, 4, 5]
    connection.send(request(6))  # a new iteration: at once again
    assert [frame[1] for frame in peer.frames()] == [6]


async def test_a_close_sends_what_is_held_first(ends: tuple[FramedConnection, Peer]) -> None:
    connection, peer = ends
    connection.send(request(1))
    connection.send(Cancel(CANCEL, 1))
    connection.close()
    await asyncio.sleep(0.01)
    assert [frame[:2] for frame in peer.frames()] == [[REQUEST, 1], [CANCEL, 1]]
