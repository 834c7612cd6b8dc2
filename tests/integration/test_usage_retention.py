"""The usage retention on SQLite and PostgreSQL, for real: records past the retention are
rolled up into per-minute sums and deleted in bounded steps, and every report over a period
gives the same totals whether its records are kept, rolled up or both; through the writer's
child too, and on a disk that fills up."""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text
from test_store import _alembic, _postgres_database

from server import TEST_ENV, StratusServer, wait_for
from stratus.observe.usage_retention import UsageRetention
from stratus.observe.usage_writer import ProcessWriter
from stratus.store.db import make_engine, migrate, sqlite_url
from stratus.store.retention import DEFAULT_RETENTION_S
from stratus.store.usage import GROUPINGS, CapacityMinute, GroupUsage, UsageRecord, UsageStore
from stratus.store.usage_rollup import PruneStep, UsageMinuteRow

DAY = 86_400
NOW = 1_800_000_000.0 + 41.5  # the injected clock: 41.5 s into a minute
CUTOFF = 1_800_000_000.0 - 7 * DAY  # NOW less the default retention, down to its minute


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    urls: Iterator[str] = (iter([sqlite_url(tmp_path)]) if request.param == "sqlite"
                           else _postgres_database())
    created = make_engine(next(urls))
    migrate(created)
    yield created
    created.dispose()
    for _ in urls:  # drops the PostgreSQL database
        pass


def _records(count: int, seed: int = 7) -> list[UsageRecord]:
    """Invocations of two namespaces over the twenty days before NOW, of every kind a report
    counts apart: cold starts, errors, shadows, tokens."""
    chance = random.Random(seed)
    made = []
    for index in range(count):
        billed = chance.choice([128, 256, 2048])
        duration = chance.uniform(0.001, 2.0)
        made.append(UsageRecord(
            chance.choice(["team", "team", "other"]), chance.choice(["echo", "chat"]),
            chance.choice([1, 2]), f"req-{index}", "rep-1", "native",
            chance.choice([200, 200, 200, 404, 500, 503]), chance.random() < 0.1,
            chance.random() < 0.05, NOW - chance.uniform(0, 20 * DAY), duration, 0.001, billed,
            40_000_000, billed, billed / 1024 * duration, chance.randint(0, 50),
            chance.randint(0, 80)))
    return made


def _capacity() -> list[CapacityMinute]:
    return [CapacityMinute("team", "echo", revision, int(CUTOFF) + offset * 60, 60.0, 2, 90.0, 30.0)
            for revision in (0, 1) for offset in range(-3, 3)]


def _totals(groups: list[GroupUsage]) -> list[tuple[Any, ...]]:
    return [(g.key, g.metered.requests, pytest.approx(g.metered.seconds, rel=1e-9),
             pytest.approx(g.metered.gb_seconds, rel=1e-9), g.metered.prompt_tokens,
             g.metered.completion_tokens, g.cold_starts, g.errors, g.shadow_requests,
             g.capacities) for g in groups]


# Periods whose ends are minutes where records are rolled up; anywhere where they are kept.
PERIODS = [(NOW - 30 * DAY, NOW + 1),  # everything: rolled and kept
           (CUTOFF - 3 * DAY, CUTOFF + 2 * DAY + 17.25),  # across the cutoff
           (CUTOFF - 5 * DAY, CUTOFF - 2 * DAY),  # rolled up only
           (CUTOFF + 1.5, NOW - 2.25)]  # kept only


def _reports(store: UsageStore) -> dict[tuple[str, float, float, str], list[tuple[Any, ...]]]:
    return {(namespace, since, until, by): _totals(store.report(namespace, since, until, by))
            for namespace in ("team", "other") for since, until in PERIODS for by in GROUPINGS}


def _thread_pruner(store: UsageStore) -> Any:
    async def prune(cursor: str, cutoff: float, limit: int) -> PruneStep:
        return await asyncio.to_thread(store.prune, cursor, cutoff, limit)
    return prune


def _count(engine: Engine, table: Any) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


async def test_reports_are_the_same_before_and_after_the_rollup(engine: Engine) -> None:
    store = UsageStore(engine)
    records = _records(600)
    store.write(records, _capacity())
    before = _reports(store)
    due = sum(r.started_at < CUTOFF for r in records)
    assert 0 < due < len(records)

    retention = UsageRetention(_thread_pruner(store), DEFAULT_RETENTION_S, batch=37, pause_s=0,
                               clock=lambda: NOW)
    assert await retention.run_once() == due
    kept = store.records("team", 0, NOW + 1, limit=10_000) + \
        store.records("other", 0, NOW + 1, limit=10_000)
    assert sorted(r.request_id for r in kept) == sorted(
        r.request_id for r in records if r.started_at >= CUTOFF)
    assert _count(engine, UsageMinuteRow) <= due  # one row per revision and minute
    assert _reports(store) == before
    assert await retention.run_once() == 0  # nothing left due: the same again
    assert _reports(store) == before


async def test_a_late_record_joins_its_minute_once_rolled_up(engine: Engine) -> None:
    store = UsageStore(engine)
    records = [r for r in _records(200) if r.started_at < CUTOFF]
    store.write(records, [])
    retention = UsageRetention(_thread_pruner(store), DEFAULT_RETENTION_S, pause_s=0,
                               clock=lambda: NOW)
    await retention.run_once()
    rows = _count(engine, UsageMinuteRow)
    # The meter kept it while the store was down; it arrives after its minute was rolled up.
    late = records[0]._replace(request_id="late")
    store.write([late], [])
    expected = _totals(store.report("team", 0, NOW, "revision"))  # kept and rolled: mixed
    await retention.run_once()
    assert _count(engine, UsageMinuteRow) == rows  # added to its minute's row, not a new one
    assert _totals(store.report("team", 0, NOW, "revision")) == expected


def test_each_step_is_one_bounded_batch_and_every_namespace_is_walked(engine: Engine) -> None:
    store = UsageStore(engine)
    old = [r for r in _records(300) if r.started_at < CUTOFF]
    store.write(old, [])
    steps = []
    cursor: str | None = ""
    while cursor is not None:
        steps.append(step := store.prune(cursor, CUTOFF, 25))
        cursor = step.next
    assert all(step.rolled <= 25 for step in steps)
    assert sum(step.rolled for step in steps) == len(old)
    assert [s.next for s in steps if s.rolled < 25][:1] == ["team"]  # "other" done, then "team"
    assert steps[-1] == PruneStep(sum(r.namespace == "team" for r in old) % 25, None)
    assert _count(engine, UsageMinuteRow) > 0 and store.records("team", 0, NOW) == []


def test_two_pruners_at_once_count_each_record_once(engine: Engine) -> None:
    """Two servers on one database: each step sums the rows its own DELETE removed, and a
    step that clashes with the other's on a minute's row rolls back whole."""
    store = UsageStore(engine)
    # Dense: the two steps' records share minutes, so both may make the same minute's row.
    records = [r._replace(started_at=CUTOFF - 300 + r.started_at % 360) for r in _records(1_500)]
    store.write(records, [])
    before = _reports(store)
    failed: list[Exception] = []

    def prune() -> int:
        rolled = 0
        cursor: str | None = ""
        while cursor is not None:
            try:
                step = store.prune(cursor, CUTOFF, 20)
            except Exception as exc:  # the clash: a run stops, the next goes on
                failed.append(exc)
                continue
            rolled += step.rolled
            cursor = step.next
        return rolled

    with ThreadPoolExecutor(2) as pool:
        rolled = sum(pool.map(lambda _: prune(), range(2)))
    assert rolled == sum(r.started_at < CUTOFF for r in records)
    assert _reports(store) == before
    assert all("unique" in str(exc).lower() or "locked" in str(exc).lower() for exc in failed)


async def test_the_writer_child_prunes_between_batches(engine: Engine) -> None:
    writer = ProcessWriter(engine.url.render_as_string(hide_password=False))
    store = UsageStore(engine)
    records = _records(300)
    try:
        await writer(records, [])
        before = _reports(store)
        retention = UsageRetention(writer.prune, DEFAULT_RETENTION_S, batch=40, pause_s=0,
                                   clock=lambda: NOW)
        assert await retention.run_once() == sum(r.started_at < CUTOFF for r in records)
        assert _reports(store) == before
        assert store.records("other", 0, CUTOFF) == []
        await writer([records[0]._replace(request_id="after", started_at=NOW - 1)], [])
        assert [r.request_id for r in store.records(records[0].namespace, NOW - 2, NOW)] \
            == ["after"]  # the child still takes batches, its answers in step
    finally:
        await writer.close()


def test_a_rolled_minute_counts_whole_when_it_starts_in_the_period(engine: Engine) -> None:
    store = UsageStore(engine)
    minute = CUTOFF - 600
    edge = [r._replace(namespace="edge", started_at=minute + offset)
            for r, offset in zip(_records(3), (0.0, 30.0, 59.5), strict=True)]
    store.write(edge, [])

    def requests(since: float, until: float) -> int:
        return sum(g.metered.requests for g in store.report("edge", since, until, "namespace"))

    assert [requests(minute, minute + 60), requests(minute + 20, minute + 60)] == [3, 2]
    while store.prune("", CUTOFF, 100).next is not None:
        pass
    assert store.records("edge", 0, NOW) == []
    # Periods on minutes: the same. One that starts within a rolled minute leaves it out
    # (as the capacity's whole minutes do); one that ends within it takes it whole.
    assert [requests(minute, minute + 60), requests(minute - 60, minute + 120)] == [3, 3]
    assert [requests(minute + 20, minute + 60), requests(minute - 60, minute + 20)] == [0, 3]


def test_records_from_before_the_migration_are_rolled_up(tmp_path: Path) -> None:
    engine = make_engine(sqlite_url(tmp_path))
    try:
        _alembic(engine, "upgrade", "0017")
        records = [r for r in _records(100) if r.started_at < CUTOFF]
        UsageStore(engine).write(records, [])
        migrate(engine)  # 0018: the rollups' table
        store = UsageStore(engine)
        before = _totals(store.report("team", 0, NOW, "deployment"))
        while store.prune("", CUTOFF, 1_000).next is not None:
            pass
        assert _totals(store.report("team", 0, NOW, "deployment")) == before
        _alembic(engine, "downgrade", "0017")
        with engine.connect() as connection:
            tables = connection.execute(text("SELECT name FROM sqlite_master")).scalars().all()
        assert "usage_minutes" not in tables and "usage" in tables
    finally:
        engine.dispose()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs",
                              str(mount_point)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(path: Path) -> None:
    with open(path, "wb", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 4096)


async def _until(condition: Callable[[], bool], limit_s: float = 30.0) -> None:
    async with asyncio.timeout(limit_s):
        # The retention's counters change on its task: there is no event to wait on.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_a_full_disk_stops_a_run_not_the_retention_nor_the_writer(small_disk: Path) -> None:
    engine = make_engine(sqlite_url(small_disk))
    migrate(engine)
    store = UsageStore(engine)
    records = _records(2_000)
    store.write(records, [])
    before = _reports(store)
    with engine.connect() as connection:  # the next write must grow the WAL, and cannot
        connection.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
    filler = small_disk / "filler"
    _fill(filler)
    writer = ProcessWriter(engine.url.render_as_string(hide_password=False))
    retention = UsageRetention(writer.prune, DEFAULT_RETENTION_S, every_s=0.05, pause_s=0,
                               clock=lambda: NOW)
    try:
        with pytest.raises(RuntimeError, match="InsufficientStorage"):
            await retention.run_once()
        assert "full" in writer.disk.full["usage"]
        retention.start()
        await _until(lambda: retention.failures >= 3)  # the runs go on failing, each alone
        assert _count(engine, UsageMinuteRow) == 0  # each failed step rolled back whole
        assert len(store.records("team", 0, NOW + 1, limit=10_000)) == sum(
            r.namespace == "team" for r in records)
        filler.unlink()  # space is back: the next run rolls up, no restart
        await _until(lambda: retention.rolled == sum(r.started_at < CUTOFF for r in records))
        assert _reports(store) == before
        await writer([records[0]._replace(request_id="after", started_at=NOW - 1)], [])
        assert writer.disk.full == {}
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA integrity_check")).scalar() == "ok"
    finally:
        await retention.close()
        await writer.close()
        engine.dispose()


def test_a_server_rolls_old_records_up_and_reports_the_same(tmp_path: Path) -> None:
    now = time.time()
    records = [r._replace(namespace="default", started_at=r.started_at - NOW + now - 8 * DAY)
               for r in _records(400)]  # 8 to 28 days old: all due
    reference = make_engine(sqlite_url(tmp_path))  # the same records, never rolled up
    migrate(reference)
    UsageStore(reference).write(records, [])
    since = (now - 30 * DAY) // 60 * 60
    server = StratusServer(tmp_path / "data", {**TEST_ENV, "STRATUS_USAGE_RETENTION_S": "20"})
    server.start()  # prunes every 10 s: half its retention
    try:
        served = make_engine(sqlite_url(server.data_dir))
        UsageStore(served).write(records, [])
        period = {"since": datetime.fromtimestamp(since, UTC).isoformat()}
        wait_for(lambda: not server.http.get("/api/usage/records", params=period).json()["records"],
                 30, "the records to be rolled up")
        assert _count(served, UsageMinuteRow) > 0
        served.dispose()
        for by in GROUPINGS:
            report = server.http.get("/api/usage", params={**period, "by": by}).json()
            expected = UsageStore(reference).report("default", since, time.time(), by)
            assert [(tuple(g[name] for name in GROUPINGS[:len(e.key)]), g["requests"],
                     g["errors"], g["cold_starts"], g["prompt_tokens"]) for g, e in
                    zip(report["groups"], expected, strict=True)] == [
                (e.key, e.metered.requests, e.errors, e.cold_starts, e.metered.prompt_tokens)
                for e in expected]
            assert report["total"]["gb_seconds"] == pytest.approx(
                sum(e.metered.gb_seconds for e in expected), rel=1e-9)
        assert "usage retention: rolled 400 usage records" in server.log_path.read_text()
    finally:
        server.stop()
        reference.dispose()
