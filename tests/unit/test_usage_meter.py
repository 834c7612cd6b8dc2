"""The usage meter's batching writer against a real SQLite store: records wait in memory, are
written in batches, meet their tokens whichever comes first, and survive a failed write."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from stratus.dispatch.outcomes import Outcome
from stratus.dispatch.pool import PoolLimits, RevisionPool
from stratus.observe.usage import UsageMeter
from stratus.store.db import make_engine, migrate, sqlite_url
from stratus.store.usage import CapacityMinute, UsageStore

MB = 2**20
LIMITS = {"fixed": (512, 40 * MB), "open": (None, 300 * MB)}  # deployment -> (limit, peak RSS)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    made = make_engine(sqlite_url(tmp_path))
    migrate(made)
    yield made
    made.dispose()


def _memory(outcome: Outcome, probe: bool) -> tuple[int | None, int]:
    return LIMITS[outcome.deployment]


def _meter(engine: Engine, pools: list[RevisionPool] | None = None, **kwargs: float) -> UsageMeter:
    return UsageMeter(UsageStore(engine), _memory, lambda: pools or [], **kwargs)  # type: ignore[arg-type]


def _outcome(deployment: str = "fixed", request_id: str = "r1", latency: float = 0.5,
             wait: float = 0.1, protocol: str = "native", replica: str | None = "rep-1",
             at: float | None = None) -> Outcome:
    return Outcome(namespace="team", deployment=deployment, revision=1, ok=True, latency_s=latency,
                   shadow=False, at=time.time() if at is None else at, request_id=request_id,
                   protocol=protocol, queue_wait_s=wait, replica_id=replica)


def _all(engine: Engine) -> list[dict[str, object]]:
    records = UsageStore(engine).records("team", 0, time.time() + 1, limit=1000)
    return [{"request_id": r.request_id, "duration_s": r.duration_s, "billed": r.billed_memory_mb,
             "gb_seconds": r.gb_seconds, "tokens": (r.prompt_tokens, r.completion_tokens),
             "started_at": r.started_at} for r in records]


async def test_records_wait_for_the_flush_and_are_billed_by_the_memory_rule(engine: Engine) -> None:
    meter = _meter(engine)
    end = time.time()
    meter.observe(_outcome("fixed", "a", latency=0.5, wait=0.1, at=end))
    meter.observe(_outcome("open", "b", latency=2.0, wait=0.0))
    meter.observe(_outcome("fixed", "shed", replica=None))  # reached no replica: not billed
    assert _all(engine) == []  # nothing written on the request path
    await meter.flush()
    found = {r["request_id"]: r for r in _all(engine)}
    assert set(found) == {"a", "b"}
    assert found["a"]["duration_s"] == pytest.approx(0.4)  # the queue wait is not billed
    assert found["a"]["started_at"] == pytest.approx(end - 0.5)  # arrival
    assert found["a"]["billed"] == 512 and found["a"]["gb_seconds"] == pytest.approx(0.2)
    assert found["b"]["billed"] == 384  # no limit: 300 MB peak, in 128 MB steps
    assert found["b"]["gb_seconds"] == pytest.approx(0.75)


async def test_a_full_buffer_is_written_before_the_interval(engine: Engine) -> None:
    meter = _meter(engine, flush_s=60.0, flush_at=10)
    taken = asyncio.Event()
    meter.on_records.append(lambda records: taken.set())
    await meter.start()
    try:
        for n in range(10):
            meter.observe(_outcome(request_id=f"r{n}"))
        await asyncio.wait_for(taken.wait(), 5)  # long before the 60 s interval
        await meter.flush()  # waits for the write in flight
        assert meter.written == 10
    finally:
        await meter.close()


async def test_tokens_meet_their_record_before_or_after_it(engine: Engine) -> None:
    meter = _meter(engine)
    meter.tokens("early", 7, 3)  # a stream's final event comes before its outcome
    meter.observe(_outcome(request_id="early", protocol="openai"))
    meter.observe(_outcome(request_id="late", protocol="openai"))
    # Several prompts in one request: one invocation (and one token count) each.
    meter.observe(_outcome(request_id="fan", protocol="openai"))
    meter.observe(_outcome(request_id="fan", protocol="openai"))
    await meter.flush()
    assert [r["request_id"] for r in _all(engine)] == ["early"]  # the others wait for tokens
    meter.tokens("late", 11, 5)
    meter.tokens("fan", 2, 1)
    meter.tokens("fan", 4, 1)
    await meter.flush()
    tokens: dict[str, list[tuple[int, int]]] = {}
    for record in _all(engine):
        tokens.setdefault(str(record["request_id"]), []).append(record["tokens"])  # type: ignore[arg-type]
    assert tokens["early"] == [(7, 3)]
    assert tokens["late"] == [(11, 5)]
    assert sorted(tokens["fan"]) == [(2, 1), (4, 1)]


async def test_a_record_whose_tokens_never_come_is_written_without_them(engine: Engine) -> None:
    meter = _meter(engine, token_wait_s=0.05)
    meter.observe(_outcome(request_id="failed", protocol="openai"))
    await meter.flush()
    assert _all(engine) == []
    await asyncio.sleep(0.06)
    await meter.flush()
    assert [r["tokens"] for r in _all(engine)] == [(0, 0)]


async def test_a_failed_write_is_retried(tmp_path: Path) -> None:
    engine = make_engine(sqlite_url(tmp_path))  # no tables yet: the first write fails
    try:
        meter = _meter(engine)
        told: list[str] = []
        meter.on_records.append(lambda records: told.extend(r.request_id for r in records))
        meter.observe(_outcome(request_id="kept"))
        await meter.flush()
        assert meter.written == 0
        migrate(engine)
        await meter.flush()
        assert meter.written == 1
        assert told == ["kept"]  # once, though written on the second try
        assert [r["request_id"] for r in _all(engine)] == ["kept"]
    finally:
        engine.dispose()


async def test_the_sampler_adds_up_replicas_per_minute_and_deployment(engine: Engine) -> None:
    limits = PoolLimits(max_concurrency=1, timeout_s=10, max_queued=10, queue_timeout_s=10)
    one = RevisionPool("team", "fixed", 1, limits, lambda pool: None)
    two = RevisionPool("team", "fixed", 2, limits, lambda pool: None)
    one.add_starting("a").inflight = 1
    one.add_starting("b")
    two.add_starting("c")
    meter = _meter(engine, pools=[one, two])
    minute = 1_800_000_000 // 60 * 60
    for second in range(4):
        meter.sample(minute + second, 0.5)
    await meter.flush()
    store = UsageStore(engine)
    by_revision = {g.key: g.capacities for g in store.report("team", minute, minute + 60, "revision")}
    assert by_revision[("team", "fixed", 1)][0].replica_seconds == pytest.approx(4.0)  # 2 x 4 x 0.5
    assert by_revision[("team", "fixed", 1)][0].idle_replica_seconds == pytest.approx(2.0)
    assert by_revision[("team", "fixed", 2)][0].replica_seconds == pytest.approx(2.0)
    whole = store.report("team", minute, minute + 60, "deployment")[0].capacities[0]
    assert whole.observed_s == pytest.approx(2.0)
    assert whole.replica_seconds == pytest.approx(6.0)
    # Half of that minute lies before a report that starts 30 s into it.
    half = store.report("team", minute + 30, minute + 60, "deployment")[0].capacities[0]
    assert half.replica_seconds == pytest.approx(3.0)


def test_capacity_minutes_are_replaced_not_added(engine: Engine) -> None:
    store = UsageStore(engine)
    store.write([], [CapacityMinute("team", "fixed", 0, 600, 10.0, 1, 10.0, 2.0)])
    store.write([], [CapacityMinute("team", "fixed", 0, 600, 20.0, 2, 30.0, 4.0)])
    (group,) = store.report("team", 600, 660, "deployment")
    assert group.capacities[0].observed_s == 20.0
    assert group.capacities[0].peak_replicas == 2


async def test_a_pool_created_within_a_step_is_counted_from_its_creation(engine: Engine) -> None:
    limits = PoolLimits(max_concurrency=1, timeout_s=10, max_queued=10, queue_timeout_s=10)
    old = RevisionPool("team", "grown", 1, limits, lambda pool: None)
    new = RevisionPool("team", "fresh", 1, limits, lambda pool: None)
    old.created, new.created = 100.0, 104.9  # the new one appeared 0.1 s before the sample
    meter = _meter(engine, pools=[old, new])
    minute = 1_800_000_000 // 60 * 60
    meter.sample(minute, 0.5, now=105.0)
    meter.sample(minute + 0.5, 0.5, now=105.5)
    await meter.flush()
    store = UsageStore(engine)
    observed = {g.key: g.capacities[0].observed_s
                for g in store.report("team", minute, minute + 60, "deployment")}
    # Billing the first step whole would charge 0.4 s the deployment did not exist.
    assert observed[("team", "fresh")] == pytest.approx(0.6)
    assert observed[("team", "grown")] == pytest.approx(1.0)
