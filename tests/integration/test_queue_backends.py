"""One suite for every queue backend, run on SQLite (WAL), PostgreSQL and Redis: the real
services of this machine, with the queue's clock injected."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, delete
from test_store import _postgres_database

from stratus.errors import BadRequest, Conflict, IdempotencyConflict
from stratus.queue.base import InvocationQueue
from stratus.queue.factory import open_queue
from stratus.queue.records import IDEMPOTENCY_WINDOW_S, NewInvocation, Status, body_digest
from stratus.queue.redis import RedisQueue
from stratus.queue.sql import TABLE, SqlQueue
from stratus.store.db import make_engine, migrate, sqlite_url

REDIS = os.environ.get("STRATUS_TEST_REDIS", "redis://127.0.0.1:6379/0")
T0 = 1_800_000_000.0
NS = "team-a"

Factory = Callable[[], InvocationQueue]


@pytest.fixture(scope="module")
def postgres_engine() -> Iterator[Engine]:
    for url in _postgres_database():  # a fresh database for this module, dropped after
        engine = make_engine(url)
        migrate(engine)
        yield engine
        engine.dispose()


@pytest.fixture(scope="module")
def sqlite_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = make_engine(sqlite_url(tmp_path_factory.mktemp("queue")))
    migrate(engine)
    yield engine
    engine.dispose()


async def _redis_prefix() -> str:
    import redis.asyncio as aioredis

    client = aioredis.from_url(REDIS)
    try:
        await client.ping()
    except (OSError, aioredis.ConnectionError) as exc:
        pytest.skip(f"Redis is not reachable at {REDIS}: {exc}")
    finally:
        await client.aclose()
    return f"stratus-test-{uuid.uuid4().hex[:12]}"


async def _redis_clean(prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(REDIS)
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture(params=["sqlite", "postgres", "redis"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Factory]:
    """Opens queues on one backend's shared storage (two of them act as two servers)."""
    prefix = ""
    if request.param == "redis":
        prefix = await _redis_prefix()

        def factory() -> InvocationQueue:
            return RedisQueue(REDIS, prefix=prefix)
    else:
        engine: Engine = request.getfixturevalue(f"{request.param}_engine")
        with engine.begin() as connection:
            connection.execute(delete(TABLE))

        def factory() -> InvocationQueue:
            return open_queue(None, engine)

    created: list[InvocationQueue] = []

    def make_one() -> InvocationQueue:
        created.append(factory())
        return created[-1]

    yield make_one
    for queue in created:
        await queue.close()
    if prefix:
        await _redis_clean(prefix)


@pytest.fixture
async def queue(make: Factory) -> InvocationQueue:
    opened = make()
    await opened.open()
    return opened


def new(payload: Any = None, *, namespace: str = NS, deployment: str = "echo",
        **changes: Any) -> NewInvocation:
    body = (payload if isinstance(payload, bytes)
            else f'{{"n": {payload if payload is not None else 0}}}'.encode())
    key = changes.get("idempotency_key")
    fields: dict[str, Any] = {
        "id": uuid.uuid4().hex, "namespace": namespace, "deployment": deployment,
        "payload": body, "max_attempts": 3, "expires_at": T0 + 3600,
        "digest": body_digest(namespace, deployment, body) if key else None, **changes}
    return NewInvocation(**fields)


async def test_enqueue_and_get_round_trip_every_field(queue: InvocationQueue) -> None:
    sent = new(b'{"x": [1, 2, 3]}', priority=4, not_before=T0 + 5, pinned_revision=2,
               idempotency_key="k1", source={"kind": "schedule", "name": "nightly"})
    record, created = await queue.enqueue(sent, T0)
    assert created and record.status is Status.QUEUED and record.attempts == 0
    got = await queue.get(NS, sent.id)
    assert got == record
    assert (got.payload, got.priority, got.not_before, got.pinned_revision, got.source) == (
        b'{"x": [1, 2, 3]}', 4, T0 + 5, 2, {"kind": "schedule", "name": "nightly"})
    assert (got.created_at, got.expires_at, got.digest) == (T0, T0 + 3600, sent.digest)
    held = new(running_owner="sync-call", lease_s=30.0)
    running, _ = await queue.enqueue(held, T0)
    got = await queue.get(NS, held.id)
    assert got == running and got.status is Status.RUNNING and got.attempts == 1
    assert (got.lease_owner, got.lease_until, got.started_at) == ("sync-call", T0 + 30, T0)
    assert await queue.claim("w", NS, "echo", 10, T0 + 10, 30) != []  # the queued one only
    assert await queue.claim("w", NS, "echo", 10, T0 + 10, 30) == []
    done = await queue.finish("sync-call", held.id, Status.SUCCEEDED, T0 + 1, result=b'{"ok":1}')
    assert done is not None and done.result == b'{"ok":1}' and done.finished_at == T0 + 1


async def test_a_reused_id_fails_alone_among_the_writes_committed_with_it(
        queue: InvocationQueue) -> None:
    twice = new()
    others = [new(i) for i in range(30)]
    outcomes = await asyncio.gather(*(queue.enqueue(item, T0) for item in [twice, *others, twice]),
                                    return_exceptions=True)
    assert [type(outcome) for outcome in outcomes if isinstance(outcome, BaseException)] == [
        Conflict]
    assert len((await queue.page(NS, limit=100)).items) == 31
    assert await queue.pending(T0) == {(NS, "echo"): 31}


async def test_other_namespaces_see_nothing(queue: InvocationQueue) -> None:
    sent = new()
    await queue.enqueue(sent, T0)
    assert await queue.get("team-b", sent.id) is None
    assert await queue.get(NS, "no-such-id") is None
    assert await queue.cancel("team-b", sent.id, T0) is None
    assert (await queue.page("team-b")).items == []
    assert await queue.claim("w", "team-b", "echo", 10, T0, 30) == []
    assert (await queue.get(NS, sent.id)).status is Status.QUEUED  # type: ignore[union-attr]


async def test_idempotency_key_names_one_invocation_per_body(queue: InvocationQueue) -> None:
    first, created = await queue.enqueue(new(1, idempotency_key="order-7"), T0)
    again, created_again = await queue.enqueue(new(1, idempotency_key="order-7"), T0 + 60)
    assert created and not created_again and again.id == first.id
    with pytest.raises(IdempotencyConflict):
        await queue.enqueue(new(2, idempotency_key="order-7"), T0 + 60)
    other_ns, created = await queue.enqueue(new(2, idempotency_key="order-7",
                                                namespace="team-b"), T0)
    assert created and other_ns.id != first.id
    # Twenty racing repeats make one invocation.
    results = await asyncio.gather(*(queue.enqueue(new(3, idempotency_key="race"), T0)
                                     for _ in range(20)))
    assert len({record.id for record, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    # Past the window the key is free again, for another body too.
    later = T0 + IDEMPOTENCY_WINDOW_S + 1
    reused, created = await queue.enqueue(new(9, idempotency_key="order-7"), later)
    assert created and reused.id != first.id
    assert (await queue.get(NS, first.id)).idempotency_key is None  # type: ignore[union-attr]


async def test_claim_takes_highest_priority_first_then_oldest(queue: InvocationQueue) -> None:
    ids = {}
    for name, priority in [("a0", 0), ("b5", 5), ("c0", 0), ("d5", 5), ("e1", 1)]:
        record, _ = await queue.enqueue(new(priority=priority), T0)
        ids[record.id] = name
    later, _ = await queue.enqueue(new(priority=9, not_before=T0 + 60), T0)
    await queue.enqueue(new(deployment="other"), T0)
    claimed = await queue.claim("w", NS, "echo", 3, T0 + 1, 30)
    assert [ids[r.id] for r in claimed] == ["b5", "d5", "e1"]
    assert all(r.status is Status.RUNNING and r.attempts == 1 and r.lease_owner == "w"
               and r.lease_until == T0 + 31 and r.started_at == T0 + 1 for r in claimed)
    claimed = await queue.claim("w", NS, "echo", 10, T0 + 2, 30)
    assert [ids[r.id] for r in claimed] == ["a0", "c0"]  # not the one not due before T0 + 60
    assert await queue.pending(T0 + 2) == {(NS, "echo"): 1, (NS, "other"): 1}
    claimed = await queue.claim("w", NS, "echo", 10, T0 + 60, 30)
    assert [r.id for r in claimed] == [later.id]


async def test_concurrent_claimers_share_the_work_without_overlap(make: Factory) -> None:
    first, second = make(), make()  # two servers on one store
    await first.open()
    await second.open()
    sent = [new(i) for i in range(300)]
    await asyncio.gather(*(first.enqueue(item, T0) for item in sent))
    taken: list[list[str]] = [[], [], [], []]

    async def loop(index: int) -> None:
        queue = (first, second)[index % 2]
        while batch := await queue.claim(f"owner-{index}", NS, "echo", 7, T0 + 1, 30):
            taken[index] += [record.id for record in batch]

    await asyncio.gather(*(loop(i) for i in range(4)))
    every = [invocation_id for ids in taken for invocation_id in ids]
    assert len(every) == len(set(every)) == 300
    assert set(every) == {item.id for item in sent}
    assert await first.pending(T0 + 1) == {}


async def test_only_the_lease_owner_finishes_or_retries(queue: InvocationQueue) -> None:
    sent = new()
    await queue.enqueue(sent, T0)
    await queue.claim("w1", NS, "echo", 1, T0, 30)
    assert await queue.finish("w2", sent.id, Status.SUCCEEDED, T0 + 1) is None
    assert await queue.retry("w2", sent.id, T0 + 1, T0 + 2, {"type": "x", "message": "y"}) is None
    done = await queue.finish("w1", sent.id, Status.SUCCEEDED, T0 + 1, result=b"{}", revision=3)
    assert done is not None and done.status is Status.SUCCEEDED and done.revision == 3
    assert done.lease_owner is None and done.error is None
    assert await queue.finish("w1", sent.id, Status.FAILED, T0 + 2) is None  # ended already


async def test_renewed_leases_hold_and_expired_ones_are_recovered(queue: InvocationQueue) -> None:
    kept, lost = new(1), new(2)
    await queue.enqueue(kept, T0)
    await queue.enqueue(lost, T0)
    await queue.claim("w", NS, "echo", 2, T0, 10)
    await queue.renew("w", [kept.id], T0 + 100)
    await queue.renew("intruder", [lost.id], T0 + 1000)  # not its lease: no effect
    assert await queue.recover(T0 + 5) == 0
    assert await queue.recover(T0 + 50) == 1
    back = await queue.get(NS, lost.id)
    assert back is not None and back.status is Status.QUEUED and back.attempts == 1
    assert back.lease_owner is None
    assert (await queue.get(NS, kept.id)).status is Status.RUNNING  # type: ignore[union-attr]
    assert await queue.finish("w", lost.id, Status.SUCCEEDED, T0 + 51) is None
    again = await queue.claim("w2", NS, "echo", 5, T0 + 51, 10)
    assert [r.id for r in again] == [lost.id] and again[0].attempts == 2


async def test_cancel_queued_and_running(queue: InvocationQueue) -> None:
    waiting, running = new(1), new(2)
    await queue.enqueue(running, T0)
    await queue.claim("w", NS, "echo", 1, T0, 30)
    await queue.enqueue(waiting, T0)
    for item in (waiting, running):
        cancelled = await queue.cancel(NS, item.id, T0 + 1)
        assert cancelled is not None and cancelled.status is Status.CANCELLED
        assert cancelled.finished_at == T0 + 1
    assert await queue.finish("w", running.id, Status.SUCCEEDED, T0 + 2) is None
    assert await queue.claim("w", NS, "echo", 10, T0 + 3, 30) == []
    assert await queue.pending(T0 + 3) == {}
    unchanged = await queue.cancel(NS, running.id, T0 + 4)
    assert unchanged is not None and unchanged.finished_at == T0 + 1
    assert await queue.cancel(NS, "no-such-id", T0) is None


async def test_retry_waits_for_not_before_and_keeps_the_error(queue: InvocationQueue) -> None:
    sent = new()
    await queue.enqueue(sent, T0)
    await queue.claim("w", NS, "echo", 1, T0, 30)
    error = {"type": "handler_error", "message": "boom"}
    back = await queue.retry("w", sent.id, T0 + 1, T0 + 30, error, revision=2)
    assert back is not None and back.status is Status.QUEUED and back.not_before == T0 + 30
    assert back.error == error and back.lease_owner is None
    assert await queue.pending(T0 + 1) == {(NS, "echo"): 1}
    assert await queue.claim("w", NS, "echo", 1, T0 + 29, 30) == []
    again = await queue.claim("w", NS, "echo", 1, T0 + 30, 30)
    assert [r.id for r in again] == [sent.id] and again[0].attempts == 2
    assert again[0].error == error


async def test_set_progress_shows_on_a_running_invocation(queue: InvocationQueue) -> None:
    sent = new()
    await queue.enqueue(sent, T0)
    await queue.set_progress(sent.id, 0.9, "too early", T0)  # not running yet: ignored
    assert (await queue.get(NS, sent.id)).progress is None  # type: ignore[union-attr]
    await queue.claim("w", NS, "echo", 1, T0, 30)
    await queue.set_progress(sent.id, 0.25, "loading weights", T0 + 1)
    got = await queue.get(NS, sent.id)
    assert got is not None and (got.progress, got.progress_message) == (0.25, "loading weights")
    await queue.set_progress(sent.id, 0.5, None, T0 + 2)
    got = await queue.get(NS, sent.id)
    assert got is not None and (got.progress, got.progress_message) == (0.5, None)


async def test_expired_and_exhausted_ones_go_dead_and_redrive(queue: InvocationQueue) -> None:
    old, young, gone = new(1, expires_at=T0 + 10), new(2), new(3)
    for item in (old, young, gone):
        await queue.enqueue(item, T0)
    await queue.claim("w", NS, "echo", 1, T0, 30)  # old: running ones never expire
    await queue.finish("w", old.id, Status.DEAD, T0 + 1, error={"type": "handler_error",
                                                               "message": "3 attempts"})
    expiring = new(4, expires_at=T0 + 10)
    await queue.enqueue(expiring, T0)
    moved = await queue.expire(T0 + 11)
    assert [r.id for r in moved] == [expiring.id]
    assert moved[0].status is Status.DEAD and moved[0].error["type"] == "expired"  # type: ignore[index]
    assert await queue.expire(T0 + 12) == []
    assert sorted(await queue.redrive(NS, "echo", [old.id, young.id], T0 + 20, T0 + 999)) == [
        old.id]  # young is not dead
    back = await queue.get(NS, old.id)
    assert back is not None and back.status is Status.QUEUED and back.attempts == 0
    assert back.expires_at == T0 + 999 and back.error == {"type": "handler_error",
                                                          "message": "3 attempts"}
    assert await queue.redrive(NS, "other", None, T0 + 20, T0 + 999) == []
    assert await queue.redrive(NS, "echo", None, T0 + 20, T0 + 999) == [expiring.id]
    claimed = await queue.claim("w", NS, "echo", 10, T0 + 21, 30)
    assert {r.id for r in claimed} == {old.id, young.id, gone.id, expiring.id}


async def test_page_newest_first_with_filters_and_cursor(queue: InvocationQueue) -> None:
    sent = [new(i, deployment="echo" if i % 3 else "other") for i in range(11)]
    for index, item in enumerate(sent):
        await queue.enqueue(item, T0 + index)
    await queue.claim("w", NS, "echo", 2, T0 + 20, 30)
    newest_first = [item.id for item in reversed(sent)]
    seen: list[str] = []
    cursor = None
    for _ in range(4):
        page = await queue.page(NS, limit=4, cursor=cursor)
        seen += [r.id for r in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == newest_first
    others = await queue.page(NS, deployment="other")
    assert [r.id for r in others.items] == [i.id for i in reversed(sent) if i.deployment == "other"]
    running = await queue.page(NS, status=Status.RUNNING, limit=1)
    assert len(running.items) == 1 and running.next_cursor is not None
    rest = await queue.page(NS, status=Status.RUNNING, cursor=running.next_cursor)
    assert len(rest.items) == 1 and rest.next_cursor is None
    queued_echo = await queue.page(NS, deployment="echo", status=Status.QUEUED)
    assert len(queued_echo.items) == 5
    with pytest.raises(BadRequest):
        await queue.page(NS, cursor="not-a-cursor")


async def test_purge_deletes_old_terminal_ones_and_frees_their_keys(
        queue: InvocationQueue) -> None:
    done, dead, waiting = new(1, idempotency_key="p1"), new(2), new(3)
    for item in (done, dead, waiting):
        await queue.enqueue(item, T0)
    await queue.claim("w", NS, "echo", 2, T0, 30)
    await queue.finish("w", done.id, Status.SUCCEEDED, T0 + 1)
    await queue.finish("w", dead.id, Status.DEAD, T0 + 1)
    assert await queue.purge(T0 + 2, T0) == 1  # dead ones are kept longer
    assert await queue.get(NS, done.id) is None
    assert await queue.purge(T0 + 2, T0 + 2) == 1
    assert await queue.get(NS, dead.id) is None
    assert (await queue.get(NS, waiting.id)) is not None
    assert [r.id for r in (await queue.page(NS)).items] == [waiting.id]
    reused, created = await queue.enqueue(new(7, idempotency_key="p1"), T0 + 3)
    assert created and reused.id != done.id


def test_open_queue_refuses_an_unknown_scheme(sqlite_engine: Engine) -> None:
    with pytest.raises(ValueError, match="amqp"):
        open_queue("amqp://guest@localhost", sqlite_engine)
    assert isinstance(open_queue("", sqlite_engine), SqlQueue)
    assert isinstance(open_queue("redis://127.0.0.1:6379/0", sqlite_engine), RedisQueue)



async def test_the_sql_writer_reconnects_when_its_connection_is_killed(
        postgres_engine: Engine) -> None:
    queue = SqlQueue(postgres_engine)
    await queue.open()
    try:
        await queue.enqueue(new(), T0)
        with postgres_engine.connect() as connection:
            killed = connection.exec_driver_sql(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()").scalar()
        assert killed
        with pytest.raises(Exception, match=r"(?i)terminat|closed|connection"):
            await queue.enqueue(new(), T0)  # on the dead connection: this one fails, alone
        record, created = await queue.enqueue(new(), T0)  # on a new connection
        assert created and await queue.get(NS, record.id) == record
    finally:
        await queue.close()
