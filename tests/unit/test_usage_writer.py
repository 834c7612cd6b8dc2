"""The usage writer's child process, for real: batches stored through it, failures reported
(so the meter keeps them), and a child that died started again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from stratus.dispatch.outcomes import Outcome
from stratus.observe.usage import UsageMeter
from stratus.observe.usage_writer import ProcessWriter
from stratus.store.db import make_engine, migrate, sqlite_url
from stratus.store.usage import CapacityMinute, UsageRecord, UsageStore
from stratus.store.usage_rollup import PruneStep


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    made = make_engine(sqlite_url(tmp_path))
    migrate(made)
    yield made
    made.dispose()


def _record(request_id: str, **changes: object) -> UsageRecord:
    record = UsageRecord("team", "d", 1, request_id, "rep-1", "native", 200, False, True,
                         time.time(), 0.25, 0.01, 512, 40_000_000, 512, 0.125, 3, 4)
    return record._replace(**changes)


def _stored(engine: Engine) -> list[UsageRecord]:
    return UsageStore(engine).records("team", 0, time.time() + 1, limit=100)


async def test_batches_go_through_the_child_and_come_back_identical(engine: Engine) -> None:
    writer = ProcessWriter(str(engine.url))
    try:
        sent = [_record("a"), _record("b", memory_limit_mb=None, shadow=True)]
        await writer(sent, [CapacityMinute("team", "d", 0, 600, 10.0, 1, 10.0, 2.0)])
        await writer([_record("c")], [])
        stored = {r.request_id: r for r in _stored(engine)}
        assert set(stored) == {"a", "b", "c"}
        assert stored["a"] == sent[0] and stored["b"] == sent[1]  # every field, None and bools too
        assert UsageStore(engine).report("team", 0, time.time() + 1, "deployment")[0].capacities
    finally:
        await writer.close()


async def test_a_failed_write_is_reported_and_a_dead_child_is_replaced(tmp_path: Path) -> None:
    engine = make_engine(sqlite_url(tmp_path))  # no tables yet: the child's write fails
    writer = ProcessWriter(str(engine.url))
    try:
        with pytest.raises(RuntimeError, match="usage writer failed"):
            await writer([_record("kept")], [])
        migrate(engine)
        process = writer._process
        assert process is not None
        process.kill()
        await process.wait()
        await writer([_record("kept")], [])  # a new child
        assert writer._process is not process
        assert [r.request_id for r in _stored(engine)] == ["kept"]
    finally:
        await writer.close()
        engine.dispose()


async def test_the_meter_keeps_what_the_child_could_not_write(tmp_path: Path) -> None:
    engine = make_engine(sqlite_url(tmp_path))
    writer = ProcessWriter(str(engine.url))
    meter = UsageMeter(UsageStore(engine), lambda outcome, probe: (256, 0), lambda: [], writer=writer)
    try:
        meter.observe(Outcome(namespace="team", deployment="d", revision=1, ok=True, latency_s=0.5,
                              shadow=False, at=time.time(), request_id="r", replica_id="rep-1"))
        await meter.flush()
        assert meter.written == 0  # the table is missing: kept for the next try
        migrate(engine)
        await meter.flush()
        assert meter.written == 1 and [r.request_id for r in _stored(engine)] == ["r"]
    finally:
        await writer.close()
        engine.dispose()


async def test_a_call_cancelled_while_the_child_works_leaves_no_answer_for_the_next(
        engine: Engine) -> None:
    """The retention's step and the meter's batches share the child: a stale answer taken by
    the next caller would be a write's ``ok`` read as a prune's, or a failure as a success."""
    writer = ProcessWriter(str(engine.url))
    try:
        await writer([_record("first")], [])  # the child is up
        batch = [_record(f"big-{index}") for index in range(20_000)]
        busy = asyncio.create_task(writer(batch, []))
        await asyncio.sleep(0.05)  # the frame is sent; the child is still writing it
        busy.cancel()
        with pytest.raises(asyncio.CancelledError):
            await busy
        step = await writer.prune("", 0.0, 10)  # its own answer, not the write's "ok"
        assert step == PruneStep(0, None)
    finally:
        await writer.close()
