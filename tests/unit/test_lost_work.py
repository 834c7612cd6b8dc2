"""Retries of lost work: which failed attempts may be sent again (resilience/retry.py), the
retry budget on an injected clock, and how a replica channel tells a request its handler took
from one it never saw (on a real socket pair)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest
import uvloop

from stratus.dispatch.channel import ReplicaChannel
from stratus.errors import HandlerError, OutOfMemory, ReplicaLost, RequestTimeout, StratusError
from stratus.resilience.retry import (
    Attempted,
    Denied,
    Failure,
    RetryBudget,
    denial,
    failure_of,
)
from stratus.resilience_spec import RetrySpec
from stratus.runtime import wire
from stratus.runtime.ack_gate import AckGate
from stratus.runtime.connection import FramedConnection
from stratus.runtime.messages import CHUNK, RESPONSE, Chunk, Response


def lost(reached: bool) -> ReplicaLost:
    """A request that was sent to a replica that then died; ``reached``: it had acked it."""
    error = ReplicaLost("replica r-1 failed mid-request: replica was killed by signal 9")
    error.reached_handler = reached
    return error


def unsent() -> ReplicaLost:
    """A request that could not be sent: its replica was already gone."""
    error = ReplicaLost("replica r-1 is gone: replica was killed by signal 9")
    error.sent = error.reached_handler = False
    return error


def out_of_memory(reached: bool) -> OutOfMemory:
    error = OutOfMemory("replica r-1 failed mid-request: replica ran out of memory")
    error.reached_handler = reached
    return error


FIRST = Attempted(attempts=1, idempotent_request=False, streamed=False, time_left=None)


def test_each_failure_has_its_kind_and_a_handlers_own_failures_have_none() -> None:
    # What happened names the failure; whether the handler had the request is another matter.
    assert failure_of(unsent()) is Failure.CONNECT
    assert failure_of(lost(False)) is Failure.REPLICA_LOST
    assert failure_of(lost(True)) is Failure.REPLICA_LOST
    assert failure_of(RequestTimeout("no answer within 1s")) is Failure.TIMEOUT
    assert failure_of(OutOfMemory("over its limit")) is None, "it would run out again"
    assert failure_of(HandlerError("ValueError: no")) is None


def test_only_the_request_a_handler_took_ran_it_out_of_memory() -> None:
    """One OOM kill must not fail every request on the replica with a 500 that no retry
    mends: those the handler never took were lost to another request's doing."""
    assert failure_of(out_of_memory(True)) is None
    assert failure_of(out_of_memory(False)) is Failure.REPLICA_LOST
    assert denial(RetrySpec(), out_of_memory(False), FIRST) is None
    assert denial(RetrySpec(idempotent=True), out_of_memory(True), FIRST) is Denied.NOT_RETRYABLE


def test_a_request_that_never_reached_a_handler_is_resent_by_default() -> None:
    spec = RetrySpec()
    assert denial(spec, lost(False), FIRST) is None
    assert denial(spec, unsent(), FIRST) is None
    assert denial(spec, lost(True), FIRST) is Denied.DELIVERED
    assert denial(spec, RequestTimeout("late"), FIRST) is Denied.DELIVERED, \
        "a timed-out request may still run: the replica lives"


def test_a_delivered_request_is_resent_when_idempotent_by_declaration_or_by_key() -> None:
    assert denial(RetrySpec(idempotent=True), lost(True), FIRST) is None
    assert denial(RetrySpec(idempotent=True), RequestTimeout("late"), FIRST) is None
    keyed = Attempted(attempts=1, idempotent_request=True, streamed=False, time_left=None)
    assert denial(RetrySpec(), lost(True), keyed) is None


@pytest.mark.parametrize(("spec", "error", "attempted", "denied"), [
    (RetrySpec(idempotent=True), lost(True),
     Attempted(1, False, True, None), Denied.STREAMED),
    (RetrySpec(idempotent=True), lost(True),
     Attempted(2, False, False, None), Denied.ATTEMPTS),
    (RetrySpec(idempotent=True, attempts=3), lost(True),
     Attempted(2, False, False, None), None),
    (RetrySpec(attempts=1), lost(False), FIRST, Denied.ATTEMPTS),
    (RetrySpec(), lost(False), Attempted(1, False, False, 0.0), Denied.DEADLINE),
    (RetrySpec(), lost(False), Attempted(1, False, False, 0.5), None),
    (RetrySpec(on=["replica_lost"]), lost(False), FIRST, None),
    (RetrySpec(on=["connect"]), lost(False), FIRST, Denied.NOT_RETRYABLE),
    (RetrySpec(on=["connect"]), unsent(), FIRST, None),
    (RetrySpec(on=["replica_lost"]), unsent(), FIRST, Denied.NOT_RETRYABLE),
    (RetrySpec(on=["connect"], idempotent=True), RequestTimeout("late"), FIRST,
     Denied.NOT_RETRYABLE),
    (RetrySpec(idempotent=True), OutOfMemory("over"), FIRST, Denied.NOT_RETRYABLE),
    (RetrySpec(idempotent=True), HandlerError("no"), FIRST, Denied.NOT_RETRYABLE),
    # A timer may fire a hair early: the caller's own timeout is final all the same.
    (RetrySpec(idempotent=True, attempts=3), RequestTimeout("late", by_caller=True),
     Attempted(1, False, False, 0.0004), Denied.DEADLINE),
    (RetrySpec(idempotent=True, attempts=3), RequestTimeout("late"),
     Attempted(1, False, False, 0.0004), None),
])
def test_what_stops_a_retry(spec: RetrySpec, error: StratusError, attempted: Attempted,
                            denied: Denied | None) -> None:
    assert denial(spec, error, attempted) is denied


def test_the_budget_allows_its_share_of_the_requests_in_the_window() -> None:
    budget = RetryBudget(window_s=10)
    for _ in range(20):
        budget.request(100.0)
    assert [budget.try_retry(100.5, 0.1, 0.0) for _ in range(3)] == [True, True, False]
    budget.request(101.0)  # 21 requests: still 2.1 retries, two of them spent
    assert not budget.try_retry(101.0, 0.1, 0.0)
    for _ in range(9):
        budget.request(102.0)  # 30 requests: a third retry
    assert budget.try_retry(102.0, 0.1, 0.0)
    assert budget.counts(102.0) == (30, 3)


def test_the_budget_forgets_what_left_the_window() -> None:
    budget = RetryBudget(window_s=10)
    for _ in range(10):
        budget.request(100.0)
    assert budget.try_retry(100.0, 0.1, 0.0)
    assert not budget.try_retry(109.9, 0.1, 0.0), "the second 100 is still in the window"
    assert budget.counts(110.0) == (0, 0), "ten seconds on, it has left"
    assert not budget.try_retry(110.0, 0.1, 0.0), "no requests: no share"


def test_the_floor_lets_a_quiet_deployment_retry() -> None:
    budget = RetryBudget(window_s=10)
    budget.request(0.0)
    assert [budget.try_retry(0.0, 0.2, 0.3) for _ in range(4)] == [True, True, True, False], \
        "0.3 a second over 10 s, plus a fifth of one request: three"


async def _channel() -> tuple[ReplicaChannel, socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX)
    _, connection = await asyncio.get_running_loop().connect_accepted_socket(
        lambda: FramedConnection(lambda message, conn: None), ours)
    channel = ReplicaChannel("r-1", 1, connection)
    connection.endpoint = channel
    return channel, theirs


async def test_a_loss_before_the_replica_acknowledged_proves_the_handler_never_ran() -> None:
    channel, replica = await _channel()
    taken, taken_future = channel.request(wire.KIND_JSON, b"{}", {}, ack=True)
    answered, answered_future = channel.request(wire.KIND_JSON, b"{}", {}, ack=True)
    unread, unread_future = channel.request(wire.KIND_JSON, b"{}", {}, ack=True)
    _, unasked_future = channel.request(wire.KIND_JSON, b"{}", {})
    await asyncio.sleep(0.01)
    sent = wire.FrameDecoder().feed(replica.recv(65536))
    assert [frame[-1].get("ack") for frame in sent] == [True, True, True, None]
    replica.sendall(wire.encode(Chunk(CHUNK, taken, wire.KIND_STARTED, None))
                    + wire.encode(Chunk(CHUNK, answered, wire.KIND_STARTED, None))
                    + wire.encode(Response(RESPONSE, answered, 0, wire.KIND_JSON, b"1")))
    await asyncio.sleep(0.01)
    assert isinstance(answered_future.result(), Response)
    assert channel.acks == {taken: True, unread: False}, "an answer ends the ack's record"
    channel.record_exit(-9, "")
    replica.close()  # kill -9
    for future, reached in ((taken_future, True), (unread_future, False),
                            (unasked_future, True)):  # no ack asked for: nothing proves it
        with pytest.raises(ReplicaLost, match="signal 9") as caught:
            await future
        assert caught.value.reached_handler is reached
    with pytest.raises(ReplicaLost) as refused:
        channel.request(wire.KIND_JSON, b"{}", {})
    assert refused.value.reached_handler is False, "a request to a dead replica is never sent"
    assert refused.value.sent is False and failure_of(refused.value) is Failure.CONNECT


async def test_an_out_of_memory_kill_fails_only_the_requests_its_handler_took() -> None:
    channel, replica = await _channel()
    taken, taken_future = channel.request(wire.KIND_JSON, b"{}", {}, ack=True)
    _, unread_future = channel.request(wire.KIND_JSON, b"{}", {}, ack=True)
    _, unasked_future = channel.request(wire.KIND_JSON, b"{}", {})
    await asyncio.sleep(0.01)
    replica.recv(65536)
    replica.sendall(wire.encode(Chunk(CHUNK, taken, wire.KIND_STARTED, None)))
    await asyncio.sleep(0.01)
    channel.record_exit(-9, "replica ran out of memory (limit 256 MB)", out_of_memory=True)
    replica.close()
    with pytest.raises(OutOfMemory) as took:
        await taken_future
    assert took.value.status == 500 and failure_of(took.value) is None
    with pytest.raises(OutOfMemory):  # no ack asked for: nothing proves it was not the one
        await unasked_future
    with pytest.raises(ReplicaLost) as unread:
        await unread_future
    assert not isinstance(unread.value, OutOfMemory), "it never ran: a 502, not its own OOM"
    assert unread.value.status == 502 and unread.value.reached_handler is False
    assert "out of memory" in unread.value.message
    assert denial(RetrySpec(), unread.value, FIRST) is None, "resent to another replica"
    with pytest.raises(ReplicaLost) as refused:
        channel.request(wire.KIND_JSON, b"{}", {}, ack=True)
    assert not isinstance(refused.value, OutOfMemory)
    assert failure_of(refused.value) is Failure.CONNECT


async def test_a_request_that_cannot_be_encoded_leaves_nothing_pending() -> None:
    channel, replica = await _channel()
    with pytest.raises(TypeError):
        channel.request(wire.KIND_JSON, object(), {}, sink=lambda kind, item: None, ack=True)
    assert (channel.pending, channel.sinks, channel.acks) == ({}, {}, {})
    replica.close()


class _Replica(asyncio.Protocol):
    """The replica's side of the connection, as ``ReplicaServer`` wires its gate."""

    def __init__(self) -> None:
        self.gate: AckGate | None = None

    def resume_writing(self) -> None:
        assert self.gate is not None
        self.gate.flushed()


async def _ack_gate_scenario() -> None:
    ours, server = socket.socketpair(socket.AF_UNIX)
    server.setblocking(False)
    loop = asyncio.get_running_loop()
    transport, replica = await loop.create_unix_connection(_Replica, sock=ours)
    gate = replica.gate = AckGate(transport)
    defaults = transport.get_write_buffer_limits()
    started: list[tuple[int, int]] = []  # (rid, bytes still in the replica's buffer then)

    def start(rid: int) -> Callable[[], None]:
        return lambda: started.append((rid, transport.get_write_buffer_size()))

    assert gate.acknowledged([(1, b"<ack 1>", start(1))]), "an idle socket: the handler starts at once"
    transport.write(b"x" * (8 << 20))  # answers the server does not read yet: the socket backs up
    assert transport.get_write_buffer_size() > 0
    # Two requests of one read, acknowledged in one write, then one of a later read.
    assert not gate.acknowledged([(2, b"<ack 2>", start(2)), (3, b"<ack 3>", start(3))])
    assert not gate.acknowledged([(4, b"<ack 4>", start(4))])
    assert gate.drop(4) and not gate.drop(4), "cancelled before its handler started"
    await asyncio.sleep(0.05)
    assert started == [(1, 0)], "a kill -9 now would lose acks 2 and 3: their handlers must wait"
    received = bytearray()
    while not received.endswith(b"<ack 4>"):
        try:
            received += server.recv(1 << 20)
        except BlockingIOError:
            await asyncio.sleep(0.001)
    for _ in range(200):
        if len(started) == 3:
            break
        await asyncio.sleep(0.005)
    assert started == [(1, 0), (2, 0), (3, 0)], "each started once its ack was in the kernel"
    assert transport.get_write_buffer_limits() == defaults
    transport.close()
    server.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_handler_starts_only_once_its_ack_has_left_the_replica(loop: str) -> None:
    """An ack waiting in the replica's write buffer dies with it: the server would resend a
    request whose handler ran. Replicas run uvloop; the default loop behaves the same."""
    factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_ack_gate_scenario())
