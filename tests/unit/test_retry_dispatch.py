"""Retries of lost work through the dispatcher, against replica channels on real socket pairs
whose replica ends the tests drive: where a retry goes, which streams may be resent, what
the retry budget counts, and how a failure outside the contract's errors is recorded."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from stratus.dispatch.admission import admission_for
from stratus.dispatch.channel import ReplicaChannel
from stratus.dispatch.dispatcher import Choice, Dispatcher, Invocation
from stratus.dispatch.outcomes import Outcome
from stratus.dispatch.pool import PoolLimits, PoolReplica, RevisionPool
from stratus.errors import ReplicaLost, Shed
from stratus.resilience.priority import Priority
from stratus.resilience_spec import RetrySpec, SheddingSpec
from stratus.runtime import wire
from stratus.runtime.connection import FramedConnection
from stratus.runtime.messages import CHUNK, REQUEST, RESPONSE, Chunk, Response, ToServer


class Peer:
    """The replica's end of a socket pair: records the requests it is sent, and answers each
    at once when ``answering``."""

    def __init__(self, sock: socket.socket, channel: ReplicaChannel, answering: bool) -> None:
        self.sock = sock
        self.channel = channel
        self.answering = answering
        self.requests: list[list[Any]] = []
        self.arrived = asyncio.Event()
        sock.setblocking(False)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        decoder = wire.FrameDecoder()
        while data := await loop.sock_recv(self.sock, 65536):
            for frame in decoder.feed(data):
                if frame[0] != REQUEST:
                    continue  # a CANCEL after a timeout
                self.requests.append(frame)
                self.arrived.set()
                if self.answering:
                    self.send(Response(RESPONSE, frame[1], 0, wire.KIND_JSON, b'"ok"'))

    def send(self, message: ToServer) -> None:
        self.sock.send(wire.encode(message))

    async def next_request(self) -> list[Any]:
        await asyncio.wait_for(self.arrived.wait(), 5)
        self.arrived.clear()
        return self.requests[-1]

    async def kill(self) -> None:
        """As kill -9: the zygote says how it ended, the socket closes."""
        self.channel.record_exit(-9, "")
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        self.sock.close()

    async def close(self) -> None:
        if self.sock.fileno() != -1:
            await self.kill()


def make_pool(retries: RetrySpec, *, max_concurrency: int = 4, timeout_s: float = 30.0,
              max_queued: int = 100) -> RevisionPool:
    limits = PoolLimits(max_concurrency=max_concurrency, timeout_s=timeout_s,
                        max_queued=max_queued, queue_timeout_s=5.0, retries=retries)
    return RevisionPool("default", "d", 1, limits, lambda pool: None)


async def add_replica(pool: RevisionPool, name: str, answering: bool) -> tuple[PoolReplica, Peer]:
    ours, theirs = socket.socketpair(socket.AF_UNIX)
    _, connection = await asyncio.get_running_loop().connect_accepted_socket(
        lambda: FramedConnection(lambda message, conn: None), ours)
    channel = ReplicaChannel(name, 1000 + len(pool.replicas), connection)
    connection.endpoint = channel
    channel.on_lost = lambda lost: pool.remove(lost.replica_id)  # as the controller does
    replica = pool.add_starting(name)
    pool.mark_ready(replica, channel, init_ms=1.0)
    return replica, Peer(theirs, channel, answering)


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    made: list[Peer] = []
    yield made
    for peer in made:
        peer._reader.cancel()
        peer.sock.close()


def invocation(**fields: Any) -> Invocation:
    return Invocation(**{"kind": wire.KIND_JSON, "payload": b"{}", "request_id": "req-1",
                         **fields})


async def test_a_retry_after_a_timeout_goes_to_another_replica(peers: list[Peer]) -> None:
    """The timed-out replica keeps its slot and stays in the pool: the less loaded one, here,
    since its sibling is busier. The retry must not go back to it."""
    pool = make_pool(RetrySpec(idempotent=True), timeout_s=0.3)
    _, hung_peer = await add_replica(pool, "hung", answering=False)
    other, other_peer = await add_replica(pool, "other", answering=True)
    peers += [hung_peer, other_peer]
    other.inflight = 2  # two requests of others' out there
    result = await Dispatcher().run(Choice(pool, None), invocation())
    assert (result.replica_id, result.attempts) == ("other", 2)
    assert len(hung_peer.requests) == 1 and len(other_peer.requests) == 1


async def test_a_stream_that_sent_an_item_is_not_resent_after_a_patch_made_it_idempotent(
        peers: list[Peer]) -> None:
    """Whether a stream is watched must not depend on the settings when it began: ``again``
    reads them when the attempt fails, and a PATCH may have changed them in between."""
    pool = make_pool(RetrySpec(idempotent=False))
    _, first_peer = await add_replica(pool, "first", answering=False)
    second, second_peer = await add_replica(pool, "second", answering=True)
    peers += [first_peer, second_peer]
    second.inflight = 1  # the first attempt goes to the idle one
    items: list[Any] = []
    dispatcher = Dispatcher()
    run = asyncio.create_task(dispatcher.run(Choice(pool, None), invocation(
        on_chunk=lambda kind, payload: items.append(payload))))
    request = await first_peer.next_request()
    assert request[-1].get("ack") is True
    first_peer.send(Chunk(CHUNK, request[1], wire.KIND_STARTED, None))
    first_peer.send(Chunk(CHUNK, request[1], wire.KIND_JSON, b'"item"'))
    for _ in range(100):
        if items:
            break
        await asyncio.sleep(0.01)
    assert items == [b'"item"'], "the client has part of the answer"
    pool.limits = replace(pool.limits, retries=RetrySpec(idempotent=True))  # a PATCH
    await first_peer.kill()
    with pytest.raises(ReplicaLost) as lost:
        await run
    assert lost.value.attempts == 1
    assert second_peer.requests == [], "a stream the client saw part of was replayed"


async def test_requests_the_pool_refuses_do_not_count_into_the_retry_budget(
        peers: list[Peer]) -> None:
    """Under overload most requests are shed: counted, they would let a sick deployment
    retry as if it served them all."""
    pool = make_pool(RetrySpec(), max_concurrency=1, max_queued=0)
    _, peer = await add_replica(pool, "r", answering=False)
    peers.append(peer)
    dispatcher = Dispatcher()
    served = asyncio.create_task(dispatcher.run(Choice(pool, None), invocation()))
    await peer.next_request()
    with pytest.raises(Shed):  # the queue is full (max_queued 0)
        await dispatcher.run(Choice(pool, None), invocation())
    pool.admission = admission_for(SheddingSpec(adaptive=True, initial_limit=1, min_limit=1),
                                   None, 1, 0, 1)
    assert pool.admission is not None
    pool.admission.admit("d", Priority.CRITICAL)  # the limit of one is taken
    with pytest.raises(Shed, match="adaptive concurrency limit"):
        await dispatcher.run(Choice(pool, None), invocation())
    budget = dispatcher.retries.budgets[("default", "d")]
    assert budget.counts(asyncio.get_running_loop().time()) == (1, 0), \
        "only the request that reached a replica counts"
    served.cancel()
    await asyncio.gather(served, return_exceptions=True)


async def test_a_failure_outside_the_contracts_errors_is_recorded_as_a_500(
        peers: list[Peer]) -> None:
    pool = make_pool(RetrySpec())
    replica, peer = await add_replica(pool, "r", answering=True)
    peers.append(peer)
    dispatcher = Dispatcher()
    outcomes: list[Outcome] = []
    dispatcher.listeners.append(outcomes.append)
    with pytest.raises(TypeError):  # a payload the wire cannot carry: a bug, not a 200
        await dispatcher.run(Choice(pool, None), invocation(payload=object()))
    assert [(o.status, o.ok, o.error_type) for o in outcomes] == [(500, False, "internal_error")]
    assert pool.outcomes.errors == 1
    assert replica.inflight == 0, "the slot went back"
    result = await dispatcher.run(Choice(pool, None), invocation())
    assert result.replica_id == "r"
