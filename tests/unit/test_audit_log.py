"""The audit log's single writer against a real SQLite store: appends are written in order and
chained, a restart or a second writer continues the chain, close loses nothing, a full queue
drops (and says so in the chain), and a failed write is retried."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from stratus.security.audit import AuditEvent, Result, verify
from stratus.security.audit_log import AuditLog
from stratus.store.audit import AuditQuery, AuditStore
from stratus.store.db import make_engine, migrate, sqlite_url


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    made = make_engine(sqlite_url(tmp_path))
    migrate(made)
    yield made
    made.dispose()


def _event(n: int, result: Result = Result.OK, actor: str = "bootstrap") -> AuditEvent:
    status = {Result.OK: 200, Result.DENIED: 401, Result.ERROR: 500}[result]
    return AuditEvent(1_700_000_000 + n / 1000, "default", actor, "deployments.patch.update",
                      f"web-{n}", "127.0.0.1", result, status, f"req-{n}")


async def test_appends_are_written_in_order_and_verify(engine: Engine) -> None:
    store = AuditStore(engine)
    audit = AuditLog(batch=100)
    audit.start(store)
    for n in range(1, 351):
        assert audit.append(_event(n))
    assert await audit.flush()
    records = list(store.scan(batch=64))  # several pages
    assert [r.event.target for r in records] == [f"web-{n}" for n in range(1, 351)]
    assert [r.id for r in records] == list(range(1, 351))
    assert verify(records).ok
    await audit.close()


async def test_close_writes_everything_queued_and_a_restart_continues_the_chain(
        engine: Engine) -> None:
    store = AuditStore(engine)
    first = AuditLog()
    for n in range(50):  # appended before the writer even starts
        first.append(_event(n))
    first.start(store)
    await first.close()
    assert len(list(store.scan())) == 50

    second = AuditLog()
    second.start(store)
    second.append(_event(50))
    await second.close()
    records = list(store.scan())
    assert len(records) == 51 and records[-1].prev_hash == records[-2].hash
    assert verify(records).ok


async def test_two_writers_on_one_database_keep_one_chain(
        engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    """Two servers on one database: a writer that finds its next id taken (its tail is stale
    after the other wrote) chains onto the other's record, quietly."""
    store = AuditStore(engine)
    left, right = AuditLog(), AuditLog()
    left.start(store)
    right.start(store)
    with caplog.at_level(logging.WARNING, "stratus.audit"):
        for n in range(12):
            writer = left if n % 2 else right
            writer.append(_event(n, actor="left" if n % 2 else "right"))
            assert await writer.flush()
        await asyncio.gather(left.close(), right.close())
    records = list(store.scan())
    assert [r.event.target for r in records] == [f"web-{n}" for n in range(12)]
    assert verify(records).ok
    assert caplog.text == ""


async def test_a_full_queue_drops_and_the_chain_says_how_many(
        engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    store = AuditStore(engine)
    audit = AuditLog(max_queued=10)
    with caplog.at_level(logging.WARNING, "stratus.audit"):
        accepted = [audit.append(_event(n, Result.DENIED)) for n in range(8)]
        # Denials may fill only half the queue; mutations the rest.
        assert accepted == [True] * 5 + [False] * 3
        assert [audit.append(_event(n)) for n in range(6)] == [True] * 5 + [False]
    assert audit.dropped == 4 and audit.accepted == 10
    assert "4 audit records dropped" not in caplog.text  # warned once, at the first drop
    assert "1 audit records dropped" in caplog.text
    audit.start(store)
    await audit.close()
    records = list(store.scan())
    assert len(records) == 11 and verify(records).ok
    notice = records[-1].event
    assert (notice.action, notice.actor, notice.target) == ("audit.dropped", "stratus", "4 records")


async def test_a_failed_write_is_retried_until_the_table_is_back(engine: Engine) -> None:
    """The table goes away under the writer (a real failure, no stub), then comes back."""
    store = AuditStore(engine)
    audit = AuditLog()
    audit.start(store)
    audit.append(_event(1))
    assert await audit.flush()
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE audit RENAME TO audit_away"))
    for n in range(2, 6):
        audit.append(_event(n))
    await asyncio.sleep(0.3)  # a write or two fail meanwhile
    assert audit.written == 1
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE audit_away RENAME TO audit"))
    assert await audit.flush()
    await audit.close()
    records = list(store.scan())
    assert [r.event.target for r in records] == [f"web-{n}" for n in range(1, 6)]
    assert verify(records).ok


async def test_queries_filter_by_namespace_time_actor_and_action(engine: Engine) -> None:
    store = AuditStore(engine)
    audit = AuditLog()
    audit.start(store)
    audit.append(AuditEvent(100.0, "default", "bootstrap", "deployments.create", "a", "", "ok", 200))
    audit.append(AuditEvent(200.0, "team", "key:k1", "deployments.traffic.put", "b", "", "ok", 200))
    audit.append(AuditEvent(300.0, "team", "key:k1", "deployments_x.create", "c", "", "ok", 200))
    audit.append(AuditEvent(400.0, "", "anonymous", "deployments.read", "", "", "denied", 401))
    await audit.close()

    def targets(**criteria: object) -> list[str]:
        return [r.event.target for r in store.query(AuditQuery(**criteria))]  # type: ignore[arg-type]

    assert targets() == ["", "c", "b", "a"]  # newest first
    assert targets(namespace="team") == ["c", "b"]
    assert targets(since=200.0, until=400.0) == ["c", "b"]
    assert targets(actor="anonymous") == [""]
    assert targets(action="deployments") == ["", "b", "a"]  # not deployments_x
    assert targets(action="deployments.traffic") == ["b"]
    assert targets(action="deployments.create") == ["a"]
    assert targets(limit=2) == ["", "c"]
    assert targets(action="deployments%") == []  # a LIKE wildcard is just a character
