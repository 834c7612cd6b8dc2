"""The SQLite queue's writes on the event loop (``stratus.queue.inline``), on a real database
file: committed by the loop when the database is free, by the writer thread when another
connection holds the lock, one failure alone, and the WAL kept short by checkpoints."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from stratus.errors import Conflict
from stratus.queue.inline import CHECKPOINT_EVERY, LoopWriter
from stratus.queue.records import NewInvocation, Status
from stratus.queue.sql import SqlQueue
from stratus.store.db import make_engine, migrate, sqlite_url

T0 = 1_800_000_000.0
NS = "team-a"


def new(n: int = 0) -> NewInvocation:
    return NewInvocation(id=uuid.uuid4().hex, namespace=NS, deployment="echo",
                         payload=f'{{"n": {n}}}'.encode(), max_attempts=3, expires_at=T0 + 3600)


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[SqlQueue]:
    engine = make_engine(sqlite_url(tmp_path))
    migrate(engine)
    opened = SqlQueue(engine)
    await opened.open()
    yield opened
    await opened.close()
    engine.dispose()


def loop_writer(queue: SqlQueue) -> LoopWriter:
    writer = queue._writer
    assert isinstance(writer, LoopWriter)
    return writer


async def test_writes_of_one_loop_iteration_share_one_commit_on_the_loop(
        queue: SqlQueue) -> None:
    writer = loop_writer(queue)
    sent = [new(i) for i in range(40)]
    await asyncio.gather(*(queue.enqueue(item, T0) for item in sent))
    assert writer.commits == 1  # forty enqueues, one transaction, no hop to the thread
    claimed = await queue.claim("w", NS, "echo", 40, T0, 30)
    done = await asyncio.gather(*(queue.finish("w", record.id, Status.SUCCEEDED, T0 + 1,
                                               result=b'{"ok":true}') for record in claimed))
    assert writer.commits == 3
    assert {record.id for record in done if record is not None} == {item.id for item in sent}
    got = await queue.get(NS, sent[0].id)
    assert got is not None and got.status is Status.SUCCEEDED and got.result == b'{"ok":true}'


async def test_a_locked_database_sends_the_writes_to_the_thread_which_waits_its_turn(
        queue: SqlQueue, tmp_path: Path) -> None:
    writer = loop_writer(queue)
    other = sqlite3.connect(tmp_path / "stratus.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer (a second server) holds the lock
    sent = new()
    pending = asyncio.create_task(queue.enqueue(sent, T0))
    await asyncio.sleep(0.3)
    assert not pending.done() and writer.commits == 0  # the loop did not wait, nor commit
    other.execute("COMMIT")
    record, created = await asyncio.wait_for(pending, 10)
    assert created and record.id == sent.id
    assert await queue.get(NS, sent.id) == record
    other.close()


async def test_a_reused_id_fails_alone_when_its_batch_was_on_the_loop(queue: SqlQueue) -> None:
    twice = new()
    await queue.enqueue(twice, T0)
    others = [new(i) for i in range(10)]
    outcomes = await asyncio.gather(*(queue.enqueue(item, T0) for item in [*others, twice]),
                                    return_exceptions=True)
    assert [type(outcome) for outcome in outcomes if isinstance(outcome, BaseException)] == [
        Conflict]
    assert await queue.pending(T0) == {(NS, "echo"): 11}


async def test_checkpoints_keep_the_wal_shorter_than_the_loops_commits(
        queue: SqlQueue, tmp_path: Path) -> None:
    """The loop commits with automatic checkpoints off; without the thread's checkpoints each
    commit would leave at least one 4 KiB frame in the WAL for good. A checkpoint holds the
    write lock while it runs (RESTART, so that the next writer starts the WAL over): the
    writes asked for meanwhile go to the thread."""
    writer = loop_writer(queue)
    commits = 20 * CHECKPOINT_EVERY
    for i in range(commits):
        await queue.enqueue(new(i), T0)
    assert writer.commits > commits * 0.8
    assert await queue.pending(T0) == {(NS, "echo"): commits}
    wal = (tmp_path / "stratus.db-wal").stat().st_size
    assert wal < commits * 4096, wal
