"""What a takeover hands across the exec: a framed connection detached mid-frame and adopted
again loses no byte and is never seen closed by its peer; an adopted child is watched to its
end; the handover state survives its trip through the environment."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from stratus.backends.handover import (
    AdoptedProcess,
    BackendHandover,
    HandedConnection,
    HandedProfile,
    HandedReplica,
    HandedRevision,
)
from stratus.gateway.takeover import ENV, Takeover, inherited, listeners
from stratus.runtime import messages, wire
from stratus.runtime.connection import FramedConnection
from stratus.runtime.messages import Heartbeat, ToServer


class Inbox:
    def __init__(self) -> None:
        self.messages: list[ToServer] = []
        self.closed = False

    def on_message(self, message: ToServer) -> None:
        self.messages.append(message)

    def on_close(self) -> None:
        self.closed = True


def _beat(inflight: int) -> bytes:
    return wire.encode(Heartbeat(messages.HEARTBEAT, inflight, 1, 1, 1))


async def _until(condition: object, what: str) -> None:
    for _ in range(400):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_connection_detached_mid_frame_is_adopted_without_losing_a_byte() -> None:
    async def scenario() -> None:
        server_end, peer = socket.socketpair()
        first, second = Inbox(), Inbox()
        connection = await FramedConnection.adopt(lambda _: first, os.dup(server_end.fileno()),
                                                  b"")
        server_end.close()
        whole, next_frame = _beat(1), _beat(2)
        peer.sendall(whole + next_frame[:5])  # one frame and the start of the next
        await _until(lambda: first.messages, "the first frame")
        fd, pending = connection.detach()
        assert pending == next_frame[:5]
        await asyncio.sleep(0.05)
        assert not first.closed  # detaching is not the peer's end
        peer.setblocking(False)
        with pytest.raises(BlockingIOError):  # open, not at EOF: the peer sees nothing
            peer.recv(1)
        adopted = await FramedConnection.adopt(lambda _: second, fd, pending)
        peer.sendall(next_frame[5:])
        await _until(lambda: second.messages, "the frame begun before the detach")
        assert [m.inflight for m in first.messages] == [1]  # type: ignore[union-attr]
        assert [m.inflight for m in second.messages] == [2]  # type: ignore[union-attr]
        adopted.send(messages.Shutdown(messages.SHUTDOWN))  # and it writes as well as reads
        await asyncio.sleep(0.05)
        peer.setblocking(True)
        assert wire.FrameDecoder().feed(peer.recv(4096)) == [[messages.SHUTDOWN]]
        peer.close()
        await _until(lambda: second.closed, "the adopted end to see the peer close")

    asyncio.run(scenario())


@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_an_adopted_child_is_watched_to_its_end(run: Callable[[Coroutine[Any, Any, None]],
                                                              None]) -> None:
    child = subprocess.Popen(["sleep", "30"])

    async def scenario() -> None:
        process = AdoptedProcess(child.pid)
        assert process.returncode is None
        process.kill()
        assert await asyncio.wait_for(process.wait(), 10) == -signal.SIGKILL
        assert process.returncode == -signal.SIGKILL
        process.terminate()  # gone: a no-op, not an error
        child.returncode = process.returncode  # reaped here: Popen must not wait for it

    run(scenario())  # the server's loop is uvloop's


def test_the_backend_state_survives_json() -> None:
    state = BackendHandover(
        [HandedProfile("default", 11, HandedConnection(5, "AAEC"))],
        [HandedRevision("ns/abc", "ns", 12, 11, {"kind": "class"}, HandedConnection(6))],
        [HandedReplica("r-1-x", "ns/abc", "ns", "r", 1, 13, HandedConnection(7),
                       {"namespace": "ns", "workdir": "/tmp/w", "memory_mb": None,
                        "identity": None, "cgroup": None})])
    again = BackendHandover.from_json(state.to_json())
    assert again == state
    assert again.descriptors() == [5, 6, 7]
    assert again.profiles[0].connection.pending_bytes() == b"\x00\x01\x02"


def test_the_takeover_crosses_the_exec_in_one_variable_read_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert inherited() is None and listeners(None) is None
    listener = socket.create_server(("127.0.0.1", 0))
    takeover = Takeover(123.5, generation=2, listen_fds=[os.dup(listener.fileno())],
                        lock_fd=9, connections=[10], backend={"replicas": []})
    import json
    from dataclasses import asdict

    monkeypatch.setenv(ENV, json.dumps(asdict(takeover)))
    got = inherited()
    assert got is not None and ENV not in os.environ  # not for the zygotes started later
    assert got.generation == 3 and got.began == 123.5 and got.connections == [10]
    sockets = listeners(got)
    assert sockets is not None
    assert sockets[0].getsockname() == listener.getsockname()
    sockets[0].close()
    listener.close()
