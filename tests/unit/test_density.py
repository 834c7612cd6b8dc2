"""The host memory budget: how much a new replica is expected to take, which idle replicas to
evict (least recently used first) to make room, and when there is no room at all."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stratus.backends.base import CodeSpec
from stratus.control.density import (
    DEFAULT_ESTIMATE,
    MIB,
    HostBudget,
    Resident,
    estimate,
    plan_room,
    replica_charge,
    unmapped_bytes,
)
from stratus.control.unit import DeploymentUnit, LiveRevision, pool_limits
from stratus.dispatch.pool import PoolReplica, ReplicaState, RevisionPool, _Waiter
from stratus.errors import Unavailable
from stratus.runtime.memory import Memory
from stratus.spec import RuntimeSpec, ScalingSpec


def resident(key: str, mb: int, last_used: float, evictable: bool = True) -> Resident:
    return Resident(key, mb * MIB, last_used, evictable)


# -- estimate ---------------------------------------------------------------------------
def test_estimate_prefers_the_declared_memory() -> None:
    assert estimate(512, [10 * MIB, 900 * MIB]) == 512 * MIB


def test_estimate_without_a_declaration_is_the_largest_sibling() -> None:
    assert estimate(None, [10 * MIB, 300 * MIB, 0, 120 * MIB]) == 300 * MIB
    assert estimate(0, [7 * MIB]) == 7 * MIB


def test_estimate_of_a_replica_never_seen_is_the_default() -> None:
    assert estimate(None, []) == DEFAULT_ESTIMATE == 256 * MIB
    assert estimate(None, [0, 0]) == DEFAULT_ESTIMATE  # siblings that have not reported yet


# -- plan_room ---------------------------------------------------------------------------
def test_plan_room_when_it_fits_evicts_nothing() -> None:
    residents = [resident("a", 100, 1.0), resident("b", 100, 2.0)]
    assert plan_room(300 * MIB, 500 * MIB, residents) == []
    assert plan_room(300 * MIB, 500 * MIB, []) == []
    assert plan_room(500 * MIB, 500 * MIB, []) == [], "exactly full fits"


def test_plan_room_evicts_least_recently_used_first_and_no_more_than_needed() -> None:
    residents = [resident("recent", 100, 30.0), resident("oldest", 100, 10.0),
                 resident("middle", 100, 20.0)]
    assert plan_room(200 * MIB, 400 * MIB, residents) == ["oldest"]
    assert plan_room(300 * MIB, 400 * MIB, residents) == ["oldest", "middle"]
    assert plan_room(400 * MIB, 400 * MIB, residents) == ["oldest", "middle", "recent"]


def test_plan_room_never_evicts_what_is_not_evictable() -> None:
    residents = [resident("busy", 100, 1.0, evictable=False), resident("idle", 100, 50.0),
                 resident("floor", 100, 2.0, evictable=False)]
    assert plan_room(200 * MIB, 400 * MIB, residents) == ["idle"]


def test_plan_room_returns_none_when_it_cannot_fit() -> None:
    residents = [resident("busy", 300, 1.0, evictable=False), resident("idle", 100, 2.0)]
    assert plan_room(250 * MIB, 400 * MIB, residents) is None
    assert plan_room(401 * MIB, 400 * MIB, []) is None, "bigger than the whole budget"
    assert plan_room(100 * MIB, 400 * MIB, [resident("x", 500, 1.0, evictable=False)]) is None


@given(
    st.lists(st.tuples(st.integers(1, 400), st.floats(0, 1000), st.booleans()), max_size=12),
    st.integers(1, 1500),
    st.integers(1, 2000),
)
def test_plan_room_properties(rows: list[tuple[int, float, bool]], need_mb: int, budget_mb: int) -> None:
    residents = [resident(f"r{i}", mb, used, ok) for i, (mb, used, ok) in enumerate(rows)]
    need, budget = need_mb * MIB, budget_mb * MIB
    used = sum(r.charge for r in residents)
    plan = plan_room(need, budget, residents)
    evictable = sorted((r for r in residents if r.evictable), key=lambda r: r.last_used)
    if plan is None:
        freed = sum(r.charge for r in evictable)
        assert used - freed + need > budget, "it said no room, yet evicting every idle one fits"
        return
    by_key = {r.key: r for r in residents}
    assert all(by_key[key].evictable for key in plan)
    assert len(set(plan)) == len(plan)
    after = used - sum(by_key[key].charge for key in plan)
    assert after + need <= budget
    # Least recently used first, and minimal: without its last victim it would not fit.
    assert [by_key[key].last_used for key in plan] == sorted(by_key[key].last_used for key in plan)
    assert plan == [r.key for r in evictable[: len(plan)]]
    if plan:
        assert after + by_key[plan[-1]].charge + need > budget


# -- HostBudget over real pools ------------------------------------------------------------
NOW = datetime(2025, 1, 1, tzinfo=UTC)


def _unit(name: str, memory_mb: int | None, ready: int = 0, min_replicas: int = 0,
          starting: int = 0) -> tuple[DeploymentUnit, LiveRevision]:
    scaling = ScalingSpec(min_replicas=min_replicas)
    runtime = RuntimeSpec(bundle="b" * 64, entrypoint="app.py:M", memory_mb=memory_mb)
    unit = DeploymentUnit("default", name, scaling, NOW, NOW)
    pool = RevisionPool("default", name, 1, pool_limits(runtime, scaling), lambda pool: None)
    live = LiveRevision(1, runtime, CodeSpec("k", "", "app.py:M"), pool, NOW)
    unit.revisions[1] = live
    unit.serving = unit.latest = 1
    for index in range(ready):
        replica = pool.add_starting(f"{name}-{index}")
        replica.state = ReplicaState.READY
        replica.last_used = float(index)
        pool.ready.append(replica)
    for index in range(starting):
        pool.add_starting(f"{name}-starting-{index}")
    return unit, live


class _Channel:
    def __init__(self, pss: int) -> None:
        self.memory = Memory(pss=pss)


def test_a_budget_of_zero_is_no_budget() -> None:
    unit, live = _unit("b", 10_000)
    assert HostBudget(0).make_room(unit, live, [unit]) is True


def test_residents_charge_pss_else_the_estimate_and_skip_draining_replicas() -> None:
    a, a_live = _unit("a", 100, ready=3)
    b, _ = _unit("b", 200)
    replicas = list(a_live.pool.replicas.values())
    replicas[0].channel = _Channel(40 * MIB)  # type: ignore[assignment]
    replicas[2].state = ReplicaState.DRAINING
    residents, where = HostBudget(1000 * MIB).residents(b, [a, b])
    charges = {r.key: r.charge for r in residents}
    assert charges == {"a-0": 40 * MIB, "a-1": 100 * MIB}
    assert set(where) == {"a-0", "a-1"}


def test_residents_of_the_deployment_itself_busy_or_starting_are_not_evictable() -> None:
    a, a_live = _unit("a", 100, ready=2, starting=1)
    b, _ = _unit("b", 100, ready=1)
    busy = a_live.pool.replicas["a-1"]
    busy.inflight = 1
    residents = {r.key: r for r in HostBudget(1000 * MIB).residents(b, [a, b])[0]}
    assert residents["a-0"].evictable
    assert not residents["a-1"].evictable, "busy"
    assert not residents["a-starting-0"].evictable, "not ready yet"
    assert not residents["b-0"].evictable, "the deployment asking for room"
    assert residents["a-0"].last_used == 0.0 and residents["a-0"].charge == 100 * MIB


def test_a_deployment_at_its_floor_is_not_evictable() -> None:
    a, _ = _unit("a", 100, ready=1, min_replicas=1)
    b, _ = _unit("b", 100)
    residents = HostBudget(1000 * MIB).residents(b, [a, b])[0]
    assert [r.evictable for r in residents] == [False]


def test_make_room_drains_the_least_recently_used_idle_replica() -> None:
    a, a_live = _unit("a", 100, ready=2)
    b, b_live = _unit("b", 150)
    assert HostBudget(300 * MIB).make_room(b, b_live, [a, b]) is True
    states = {key: r.state for key, r in a_live.pool.replicas.items()}
    assert states == {"a-0": ReplicaState.DRAINING, "a-1": ReplicaState.READY}


async def test_make_room_without_room_fails_the_held_requests_with_retry_after() -> None:
    a, a_live = _unit("a", 100, ready=1, min_replicas=1)
    b, b_live = _unit("b", 150)
    future: asyncio.Future[PoolReplica] = asyncio.get_running_loop().create_future()
    b_live.pool.waiters.append(_Waiter(future, 0.0, b_live.pool))
    assert HostBudget(200 * MIB).make_room(b, b_live, [a, b]) is False
    assert a_live.pool.replicas["a-0"].state is ReplicaState.READY, "the floor is kept"
    assert not b_live.pool.waiters
    with pytest.raises(Unavailable) as caught:
        future.result()
    assert caught.value.status == 503 and caught.value.retry_after == 5.0
    assert "memory budget (200 MiB) has no room for another replica of 'b'" in caught.value.message


def test_eviction_never_takes_a_deployment_below_its_floor() -> None:
    a, a_live = _unit("a", 100, ready=2, min_replicas=1)
    b, b_live = _unit("b", 200)
    HostBudget(250 * MIB).make_room(b, b_live, [a, b])
    still_ready = [r for r in a_live.pool.replicas.values() if r.state is ReplicaState.READY]
    assert len(still_ready) >= 1, "evicted below min_replicas=1"


# -- decrypted copies -----------------------------------------------------------------------
def copy(digest: str, mb: int, last_used: float = 0.0, evictable: bool = True) -> Resident:
    return Resident(f"plain:{digest}", mb * MIB, last_used, evictable)


def holder(key: str, mb: int, last_used: float, *digests: str, evictable: bool = True) -> Resident:
    return Resident(key, mb * MIB, last_used, evictable, frozenset(f"plain:{d}" for d in digests))


def test_a_copy_nobody_maps_goes_before_any_replica() -> None:
    residents = [holder("old", 50, 1.0), copy("w", 100, last_used=90.0)]
    assert plan_room(100 * MIB, 200 * MIB, residents) == ["plain:w"]


def test_a_copy_goes_with_its_last_holder_and_counts_as_freed() -> None:
    residents = [holder("a1", 20, 1.0, "w"), holder("a2", 20, 2.0, "w"), copy("w", 150)]
    # Evicting a1 alone frees 20; a2 still maps the copy, so it stays until a2 goes too.
    assert plan_room(40 * MIB, 210 * MIB, residents) == ["a1"]
    assert plan_room(100 * MIB, 210 * MIB, residents) == ["a1", "a2", "plain:w"]


def test_a_copy_that_is_not_evictable_stays_even_unheld() -> None:
    residents = [copy("needed", 150, evictable=False), holder("idle", 50, 1.0)]
    assert plan_room(100 * MIB, 250 * MIB, residents) == ["idle"]
    assert plan_room(200 * MIB, 250 * MIB, residents) is None


def test_a_copy_held_by_a_busy_replica_stays() -> None:
    residents = [holder("busy", 20, 1.0, "w", evictable=False), copy("w", 150)]
    assert plan_room(100 * MIB, 200 * MIB, residents) is None


def test_replica_charge_leaves_out_its_share_of_the_copies() -> None:
    assert replica_charge(300 * MIB, 100 * MIB, 150 * MIB) == 200 * MIB
    # Shared memory beyond its models' copies is its own (a tensor it put in /dev/shm).
    assert replica_charge(300 * MIB, 200 * MIB, 150 * MIB) == 150 * MIB
    assert replica_charge(300 * MIB, 100 * MIB, 0) == 300 * MIB


# -- decrypted copies on disk: page cache, charged only once mapped ------------------------
def _with_model(live: LiveRevision, digest: str, mb: int) -> None:
    live.models = [{"name": "m", "version": "1.0.0",
                    "files": {"w.safetensors": {"sha256": digest, "size": mb * MIB}}}]


def test_a_copy_on_disk_is_charged_to_the_first_replica_that_maps_it() -> None:
    a, a_live = _unit("a", 100)  # no replica yet
    _with_model(a_live, "w", 120)
    b, b_live = _unit("b", 100, ready=1)  # idle, of another deployment
    # Nothing maps w: A's first replica brings its 120 MiB into its PSS, besides its own 100.
    assert unmapped_bytes(a_live, [a, b]) == 120 * MIB
    assert HostBudget(250 * MIB).make_room(a, a_live, [a, b]) is True
    assert b_live.pool.replicas["b-0"].state is ReplicaState.DRAINING, "100 + 220 > 250"


def test_a_copy_on_disk_that_a_replica_maps_adds_nothing_for_the_next() -> None:
    a, a_live = _unit("a", 100)
    _with_model(a_live, "w", 120)
    c, c_live = _unit("c", 100, ready=1)  # maps the same file: its pages are shared
    _with_model(c_live, "w", 120)
    assert unmapped_bytes(a_live, [a, c]) == 0
    assert HostBudget(250 * MIB).make_room(a, a_live, [a, c]) is True
    assert c_live.pool.replicas["c-0"].state is ReplicaState.READY, "100 + 100 fit in 250"
    c_live.pool.replicas["c-0"].state = ReplicaState.DRAINING  # on its way out: maps no more
    assert unmapped_bytes(a_live, [a, c]) == 120 * MIB
