"""Unit tests for a revision's pool: slots, the FIFO queue, shedding, failures and draining."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

import pytest

from stratus.dispatch.ejection import ejection_for
from stratus.dispatch.pool import (
    FailureState,
    PoolLimits,
    PoolReplica,
    ReplicaState,
    RevisionPool,
)
from stratus.errors import DeploymentFailed, ReplicaLost, Shed, Unavailable
from stratus.resilience_spec import OutliersSpec


@dataclass
class StandInChannel:
    """All that mark_ready reads from a replica channel."""

    pid: int


class Activations:
    """The activate callback: records each call and does nothing else."""

    def __init__(self) -> None:
        self.calls: list[RevisionPool] = []

    def __call__(self, pool: RevisionPool) -> None:
        self.calls.append(pool)


def make_pool(
    *, max_concurrency: int = 1, max_queued: int = 100, queue_timeout_s: float = 5.0,
    activate: Activations | None = None,
) -> RevisionPool:
    limits = PoolLimits(max_concurrency=max_concurrency, timeout_s=30.0, max_queued=max_queued,
                        queue_timeout_s=queue_timeout_s)
    pool = RevisionPool("default", "demo", 1, limits, activate or Activations())
    pool.rng = random.Random(0)
    return pool


def add_ready(pool: RevisionPool, replica_id: str, pid: int = 1000) -> PoolReplica:
    replica = pool.add_starting(replica_id)
    pool.mark_ready(replica, StandInChannel(pid), init_ms=12.5)  # type: ignore[arg-type]
    return replica


async def settle() -> None:
    """Let every task that is ready to run take its step."""
    for _ in range(3):
        await asyncio.sleep(0)


def start_waiter(pool: RevisionPool) -> asyncio.Task[PoolReplica]:
    return asyncio.create_task(pool.wait_for_slot(time.monotonic()))


async def cancel_all(*tasks: asyncio.Task[Any]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# -- membership ---------------------------------------------------------------------


def test_add_starting_then_mark_ready() -> None:
    pool = make_pool()
    replica = pool.add_starting("r1")
    assert replica.state is ReplicaState.STARTING
    assert pool.replicas == {"r1": replica}
    assert pool.ready == []
    assert pool.count(ReplicaState.STARTING) == 1
    pool.mark_ready(replica, StandInChannel(4321), init_ms=80.0)  # type: ignore[arg-type]
    assert replica.state is ReplicaState.READY
    assert (replica.pid, replica.init_ms) == (4321, 80.0)
    assert replica.ready_at is not None and replica.ready_at >= replica.created_at
    assert pool.ready == [replica]
    assert (pool.count(ReplicaState.READY), pool.count(ReplicaState.STARTING)) == (1, 0)


def test_remove_stops_the_replica_and_forgets_it() -> None:
    pool = make_pool()
    replica = add_ready(pool, "r1")
    assert pool.remove("r1") is replica
    assert replica.state is ReplicaState.STOPPED
    assert pool.ready == [] and pool.replicas == {}
    assert pool.remove("r1") is None
    assert pool.try_acquire() is None


def test_mark_ready_clears_a_failure() -> None:
    pool = make_pool()
    pool.failure = FailureState(reason="init failed", detail=None, count=2, retry_at=time.monotonic() + 60)
    add_ready(pool, "r1")
    assert pool.failure is None


# -- try_acquire ----------------------------------------------------------------------


def test_try_acquire_without_ready_replicas() -> None:
    pool = make_pool()
    assert pool.try_acquire() is None
    pool.add_starting("r1")
    assert pool.try_acquire() is None


def test_try_acquire_respects_max_concurrency_of_one_replica() -> None:
    pool = make_pool(max_concurrency=3)
    replica = add_ready(pool, "r1")
    assert [pool.try_acquire() for _ in range(3)] == [replica] * 3
    assert replica.inflight == 3
    assert pool.try_acquire() is None
    assert replica.inflight == 3
    pool.release(replica)
    assert pool.try_acquire() is replica
    assert pool.try_acquire() is None


def test_try_acquire_fills_every_replica_up_to_its_limit_and_no_further() -> None:
    pool = make_pool(max_concurrency=2)
    replicas = [add_ready(pool, f"r{i}") for i in range(4)]
    taken = [pool.try_acquire() for _ in range(8)]
    assert all(r is not None for r in taken)
    assert all(r.inflight == 2 for r in replicas)
    assert pool.try_acquire() is None
    assert all(r.inflight == 2 for r in replicas)


def test_try_acquire_prefers_the_idle_replica() -> None:
    pool = make_pool(max_concurrency=10)
    busy, idle = add_ready(pool, "busy"), add_ready(pool, "idle")
    busy.inflight = 5
    # Two replicas: both are sampled, so the idle one wins until the loads cross.
    assert [pool.try_acquire() for _ in range(5)] == [idle] * 5
    assert idle.inflight == 5


def test_a_retry_skips_the_replica_its_attempt_failed_on() -> None:
    """After a timeout the hung replica is still in the pool, and the less loaded of the two
    (its slots free, the other's busy): the retry must go to the other one all the same."""
    pool = make_pool(max_concurrency=4)
    hung, other = add_ready(pool, "hung"), add_ready(pool, "other")
    hung.inflight, other.inflight = 1, 2
    assert [pool.try_acquire(avoid=hung) for _ in range(2)] == [other, other]
    assert pool.try_acquire(avoid=hung) is None, "the other is full: wait for it"
    assert pool.try_acquire() is hung, "a request that did not fail there may use it"


def test_a_retry_goes_back_to_a_lone_or_the_only_usable_replica() -> None:
    pool = make_pool(max_concurrency=2)
    lone = add_ready(pool, "lone")
    assert pool.try_acquire(avoid=lone) is lone, "nothing else to go to"
    pool.ejection = ejection_for(OutliersSpec(consecutive_failures=1), None, pool.ready)
    assert pool.ejection is not None
    ejected = add_ready(pool, "ejected")
    pool.settle(None, ejected, 500, 0.0, 0.0, time.monotonic())
    assert pool.ejection.detector.ejected == 1
    assert pool.try_acquire(avoid=lone) is lone, "its sibling is ejected"


async def test_a_queued_retry_waits_for_another_replica_and_lets_others_pass() -> None:
    pool = make_pool(max_concurrency=1)
    hung, other = add_ready(pool, "hung"), add_ready(pool, "other")
    other.inflight = 1
    retry = asyncio.create_task(pool.wait_for_slot(time.monotonic(), avoid=hung))
    behind = start_waiter(pool)
    await settle()
    assert behind.done() and behind.result() is hung, "the free replica went to the next"
    assert not retry.done()
    pool.release(other)
    assert await retry is other
    await cancel_all(retry, behind)


async def test_a_probe_granted_to_a_waiter_that_left_lets_another_request_probe() -> None:
    pool = make_pool(max_concurrency=1)
    pool.ejection = ejection_for(OutliersSpec(consecutive_failures=1, base_ejection_s=0.01),
                                 None, pool.ready)
    assert pool.ejection is not None
    sick, busy = add_ready(pool, "sick"), add_ready(pool, "busy")
    pool.settle(None, sick, 500, 0.0, 0.0, time.monotonic())
    detector = pool.ejection.detector
    busy.inflight = 1
    await asyncio.sleep(0.02)  # the back-off ends: the next request to sick is its probe
    left = asyncio.create_task(pool.wait_for_slot(time.monotonic(), token=7))
    await settle()
    assert left.done() and left.result() is sick and detector.replicas[sick].probe == 7
    pool.release(sick)
    pool.settle(None, sick, None, 0.0, 0.0, time.monotonic(), token=7)  # its caller left
    assert detector.replicas[sick].probe is None
    sick.inflight = 1  # both busy: the next request queues
    again = asyncio.create_task(pool.wait_for_slot(time.monotonic(), token=8))
    await settle()
    assert pool.waiters
    pool.release(sick)  # granted to it in this instant, as the probe ...
    assert detector.replicas[sick].probe == 8
    again.cancel()  # ... and it leaves before it could run
    with pytest.raises(asyncio.CancelledError):
        await again
    assert detector.replicas[sick].probe is None, "no probe left out forever"
    assert detector.available(sick, time.monotonic())


def test_draining_and_starting_replicas_get_no_slots() -> None:
    pool = make_pool(max_concurrency=2)
    draining = add_ready(pool, "old")
    pool.on_drained = lambda replica: None
    draining.inflight = 1
    pool.mark_draining(draining)
    pool.add_starting("new")
    assert pool.try_acquire() is None
    fresh = add_ready(pool, "fresh")
    assert pool.try_acquire() is fresh
    assert draining.inflight == 1


# -- wait_for_slot ---------------------------------------------------------------------


async def test_cold_start_waiter_is_served_when_a_replica_becomes_ready() -> None:
    activations = Activations()
    pool = make_pool(activate=activations)
    task = start_waiter(pool)
    await settle()
    assert not task.done()
    assert len(pool.waiters) == 1
    assert activations.calls == [pool]
    assert pool.busy
    replica = add_ready(pool, "r1")
    assert await task is replica
    assert replica.inflight == 1
    assert not pool.waiters


async def test_waiter_is_served_at_once_when_a_slot_is_free() -> None:
    pool = make_pool(max_concurrency=2)
    replica = add_ready(pool, "r1")
    assert await pool.wait_for_slot(time.monotonic()) is replica
    assert replica.inflight == 1


async def test_waiters_are_served_in_fifo_order_as_slots_are_released() -> None:
    pool = make_pool(max_concurrency=1)
    replica = add_ready(pool, "r1")
    assert pool.try_acquire() is replica
    served: list[int] = []
    tasks = []
    for index in range(4):
        task = start_waiter(pool)
        task.add_done_callback(lambda _, index=index: served.append(index))
        tasks.append(task)
        await settle()
    assert len(pool.waiters) == 4
    for expected in range(4):
        pool.release(replica)
        await settle()
        assert served == list(range(expected + 1))
        assert replica.inflight == 1
    assert [await task for task in tasks] == [replica] * 4


async def test_a_new_arrival_does_not_jump_the_queue() -> None:
    pool = make_pool(max_concurrency=1)
    replica = add_ready(pool, "r1")
    pool.try_acquire()
    first, second = start_waiter(pool), start_waiter(pool)
    await settle()
    pool.release(replica)  # the slot goes to the first waiter
    await settle()
    assert first.done() and not second.done()
    assert pool.try_acquire() is None  # someone is still queued
    pool.release(replica)
    await settle()
    assert second.done()
    await cancel_all(first, second)


async def test_waiters_spread_over_several_replicas() -> None:
    pool = make_pool(max_concurrency=2)
    tasks = [start_waiter(pool) for _ in range(5)]
    await settle()
    first, second = add_ready(pool, "r1"), add_ready(pool, "r2")
    await settle()
    done = [task for task in tasks if task.done()]
    assert len(done) == 4
    assert (first.inflight, second.inflight) == (2, 2)
    assert len(pool.waiters) == 1
    await cancel_all(*tasks)


async def test_full_queue_sheds_with_retry_after() -> None:
    pool = make_pool(max_queued=2)
    tasks = [start_waiter(pool), start_waiter(pool)]
    await settle()
    with pytest.raises(Shed) as info:
        await pool.wait_for_slot(time.monotonic())
    assert info.value.retry_after == 1.0
    assert info.value.status == 429
    assert "max_queued=2" in info.value.message
    assert len(pool.waiters) == 2
    await cancel_all(*tasks)


async def test_zero_max_queued_sheds_every_waiter() -> None:
    activations = Activations()
    pool = make_pool(max_queued=0, activate=activations)
    with pytest.raises(Shed):
        await pool.wait_for_slot(time.monotonic())
    assert activations.calls == []  # shed before it asks for capacity


async def test_failure_state_raises_deployment_failed() -> None:
    activations = Activations()
    pool = make_pool(activate=activations)
    pool.failure = FailureState(reason="ImportError: no module named weights", detail="Traceback ...",
                                count=3, retry_at=time.monotonic() + 30)
    with pytest.raises(DeploymentFailed) as info:
        await pool.wait_for_slot(time.monotonic())
    error = info.value
    assert "ImportError: no module named weights" in error.message
    assert error.detail == "Traceback ..."
    assert error.retry_after is not None and 0 < error.retry_after <= 30
    assert error.status == 503
    assert isinstance(error, Unavailable)
    assert not pool.waiters
    assert activations.calls == []


async def test_failure_whose_retry_time_passed_queues_the_request() -> None:
    pool = make_pool(queue_timeout_s=5.0)
    pool.failure = FailureState(reason="crashed", detail=None, count=1, retry_at=time.monotonic() - 1)
    task = start_waiter(pool)
    await settle()
    assert not task.done()
    assert len(pool.waiters) == 1
    replica = add_ready(pool, "r1")
    assert await task is replica


async def test_failure_is_ignored_while_a_replica_is_ready() -> None:
    pool = make_pool()
    replica = add_ready(pool, "r1")
    pool.failure = FailureState(reason="newer replica crashed", detail=None, count=1,
                                retry_at=time.monotonic() + 30)
    assert await pool.wait_for_slot(time.monotonic()) is replica


async def test_queue_timeout_raises_unavailable_and_leaves_the_queue() -> None:
    pool = make_pool(queue_timeout_s=0.02)
    started = time.monotonic()
    with pytest.raises(Unavailable) as info:
        await pool.wait_for_slot(started)
    assert type(info.value) is Unavailable
    assert info.value.retry_after == 1.0
    assert "within 0.02s" in info.value.message
    assert time.monotonic() - started >= 0.015
    assert not pool.waiters
    # The expired waiter is gone: a replica that comes up later keeps its slots.
    replica = add_ready(pool, "r1")
    assert replica.inflight == 0


async def test_fail_waiters_hands_every_waiter_the_error() -> None:
    pool = make_pool()
    tasks = [start_waiter(pool) for _ in range(3)]
    await settle()
    error = DeploymentFailed("init crashed", retry_after=2.0)
    pool.fail_waiters(error)
    assert not pool.waiters
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(result is error for result in results)


async def test_cancelled_waiter_gives_back_a_slot_granted_in_the_same_tick() -> None:
    pool = make_pool(max_concurrency=1)
    replica = add_ready(pool, "r1")
    pool.try_acquire()
    cancelled = start_waiter(pool)
    await settle()
    pool.release(replica)  # grants the slot to the waiter ...
    assert replica.inflight == 1
    cancelled.cancel()  # ... which is cancelled before it could run
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert replica.inflight == 0
    assert not pool.waiters
    assert pool.try_acquire() is replica


async def test_slot_given_back_by_a_cancelled_waiter_goes_to_the_next_one() -> None:
    pool = make_pool(max_concurrency=1)
    replica = add_ready(pool, "r1")
    pool.try_acquire()
    cancelled, patient = start_waiter(pool), start_waiter(pool)
    await settle()
    pool.release(replica)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert await patient is replica
    assert replica.inflight == 1


async def test_waiter_cancelled_while_queued_leaves_no_trace() -> None:
    pool = make_pool(max_concurrency=1)
    replica = add_ready(pool, "r1")
    pool.try_acquire()
    task = start_waiter(pool)
    await settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not pool.waiters
    pool.release(replica)
    assert replica.inflight == 0


# -- draining ------------------------------------------------------------------------


def test_draining_replica_calls_on_drained_when_its_last_request_ends() -> None:
    pool = make_pool(max_concurrency=4)
    replica = add_ready(pool, "r1")
    drained: list[PoolReplica] = []
    pool.on_drained = drained.append
    pool.try_acquire()
    pool.try_acquire()
    pool.mark_draining(replica)
    assert replica.state is ReplicaState.DRAINING
    assert pool.ready == []
    assert drained == []
    pool.release(replica)
    assert drained == []
    pool.release(replica)
    assert drained == [replica]
    assert pool.count(ReplicaState.DRAINING) == 1


def test_idle_replica_is_drained_at_once() -> None:
    pool = make_pool()
    replica = add_ready(pool, "r1")
    drained: list[PoolReplica] = []
    pool.on_drained = drained.append
    pool.mark_draining(replica)
    assert drained == [replica]


def test_draining_a_starting_replica() -> None:
    pool = make_pool()
    replica = pool.add_starting("r1")
    drained: list[PoolReplica] = []
    pool.on_drained = drained.append
    pool.mark_draining(replica)
    assert replica.state is ReplicaState.DRAINING
    assert drained == [replica]


async def test_release_on_a_draining_replica_does_not_serve_waiters_from_it() -> None:
    pool = make_pool(max_concurrency=1)
    old = add_ready(pool, "old")
    pool.on_drained = lambda replica: None
    pool.try_acquire()
    task = start_waiter(pool)
    await settle()
    pool.mark_draining(old)
    pool.release(old)
    await settle()
    assert not task.done()
    assert old.inflight == 0
    new = add_ready(pool, "new")
    assert await task is new


# -- handing waiters over and load -----------------------------------------------------


async def test_waiters_move_to_another_pool() -> None:
    old_pool = make_pool()
    new_activations = Activations()
    new_pool = make_pool(activate=new_activations)
    task = start_waiter(old_pool)
    await settle()
    waiters = old_pool.take_waiters()
    assert not old_pool.waiters and len(waiters) == 1
    replica = add_ready(new_pool, "r1")
    new_pool.adopt_waiters(waiters)
    assert new_activations.calls == [new_pool]
    assert await task is replica
    assert replica.inflight == 1


def test_adopting_no_waiters_does_not_activate() -> None:
    activations = Activations()
    pool = make_pool(activate=activations)
    pool.adopt_waiters(make_pool().take_waiters())
    assert activations.calls == []


async def test_sample_reports_queued_waiters() -> None:
    pool = make_pool()
    tasks = [start_waiter(pool), start_waiter(pool)]
    await settle()
    now = time.monotonic()
    pool.load.enter(now)
    sample = pool.sample(now + 1.0, t=1_800_000_000.0)
    assert sample.t == 1_800_000_000.0  # stamped with the policy clock
    assert sample.queued == 2
    assert sample.arrivals == 1
    assert pool.busy
    await cancel_all(*tasks)
    pool.load.leave(now + 1.0)
    assert not pool.busy


def test_errors_keep_their_http_statuses() -> None:
    assert (Shed("x").status, Unavailable("x").status, DeploymentFailed("x").status) == (429, 503, 503)
    assert ReplicaLost("x").status == 502


async def test_adopted_waiter_that_times_out_leaves_the_new_pool_queue() -> None:
    old_pool = make_pool(queue_timeout_s=0.02)
    new_pool = make_pool(max_queued=1)
    task = start_waiter(old_pool)
    await settle()
    new_pool.adopt_waiters(old_pool.take_waiters())  # the new revision is still cold
    with pytest.raises(Unavailable):
        await task
    assert not new_pool.waiters
    fresh = start_waiter(new_pool)  # nobody is really queued: this must not be shed
    await settle()
    assert not fresh.done()
    await cancel_all(fresh)


async def test_slot_given_back_by_an_adopted_waiter_goes_to_the_next_waiter() -> None:
    old_pool = make_pool(queue_timeout_s=0.05)
    new_pool = make_pool(max_concurrency=1)
    replica = add_ready(new_pool, "r1")
    new_pool.try_acquire()
    cancelled, patient = start_waiter(old_pool), start_waiter(old_pool)
    await settle()
    new_pool.adopt_waiters(old_pool.take_waiters())
    new_pool.release(replica)  # granted to the first adopted waiter ...
    cancelled.cancel()  # ... which is cancelled in the same tick
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert await patient is replica
