"""The queue in the metadata store's database: SQLite (WAL) by default, PostgreSQL when
configured. Writes go through one group-committing writer thread; reads run in worker threads."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    Table,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from stratus.errors import Conflict, IdempotencyConflict
from stratus.queue.records import (
    IDEMPOTENCY_WINDOW_S,
    AsyncInvocation,
    NewInvocation,
    Page,
    Status,
)
from stratus.queue.shared import (
    EXPIRED_ERROR,
    created_record,
    decode_cursor,
    encode_cursor,
)
from stratus.queue.writer import GroupWriter
from stratus.store.tables import AsyncInvocationRow

T = TypeVar("T")
TABLE: Table = AsyncInvocationRow.__table__  # type: ignore[assignment]
C = TABLE.c
# The columns in AsyncInvocation's field order, so a row becomes a record positionally.
FIELDS = tuple(AsyncInvocation.__dataclass_fields__)
COLUMNS = tuple(C[name] for name in FIELDS)
_STATUS = FIELDS.index("status")
DONE = (Status.SUCCEEDED.value, Status.FAILED.value, Status.CANCELLED.value)


def _record(row: Row[Any] | Sequence[Any]) -> AsyncInvocation:
    values = list(row[: len(FIELDS)])
    values[_STATUS] = Status(values[_STATUS])
    if values[-3] is None:  # source
        values[-3] = {}
    return AsyncInvocation(*values)


def _values(record: AsyncInvocation) -> dict[str, Any]:
    values = {name: getattr(record, name) for name in FIELDS}
    values["status"] = record.status.value
    return values


class SqlQueue:
    """InvocationQueue on a SQLAlchemy engine (``stratus.store.db.make_engine``)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._writer = GroupWriter(engine)
        dialect = engine.dialect.name
        self._insert: Callable[..., Any] = (
            postgresql.insert if dialect == "postgresql" else sqlite.insert if dialect == "sqlite"
            else insert)

    async def open(self) -> None:
        await asyncio.to_thread(self._writer.start)

    async def close(self) -> None:
        await self._writer.stop()

    async def _read(self, op: Callable[[Connection], T]) -> T:
        def run() -> T:
            with self._engine.connect() as connection:
                return op(connection)
        return await asyncio.to_thread(run)

    async def enqueue(self, new: NewInvocation, now: float) -> tuple[AsyncInvocation, bool]:
        record = created_record(new, now)
        values = _values(record)
        if new.idempotency_key is None:
            await self._writer.run(lambda c: c.execute(insert(TABLE), values))
            return record, True
        return await self._writer.run(lambda c: self._enqueue_keyed(c, record, values, now))

    def _enqueue_keyed(self, connection: Connection, record: AsyncInvocation,
                       values: dict[str, Any], now: float) -> tuple[AsyncInvocation, bool]:
        key = (C.namespace == record.namespace) & (C.idempotency_key == record.idempotency_key)
        # A key older than the window names nothing any more: free it for this invocation.
        connection.execute(update(TABLE).where(key, C.created_at < now - IDEMPOTENCY_WINDOW_S)
                           .values(idempotency_key=None))
        # The unique (namespace, idempotency_key) decides between racing repeats, in this
        # process or another: the loser inserts nothing and reads the winner.
        inserted = connection.execute(
            self._insert(TABLE).values(values).on_conflict_do_nothing().returning(C.seq)).first()
        if inserted is not None:
            return record, True
        row = connection.execute(select(*COLUMNS).where(key)).first()
        if row is None:
            raise Conflict(f"invocation {record.id} already exists")
        existing = _record(row)
        if existing.digest != record.digest:
            raise IdempotencyConflict(
                f"idempotency key {record.idempotency_key!r} was used for invocation "
                f"{existing.id} with another body")
        return existing, False

    async def claim(self, owner: str, namespace: str, deployment: str, limit: int, now: float,
                    lease_s: float) -> list[AsyncInvocation]:
        # FOR UPDATE SKIP LOCKED on PostgreSQL: a claimer passes over rows another claimer's
        # open transaction holds instead of waiting for them. SQLite renders no FOR UPDATE:
        # its writer holds the database's one write lock (BEGIN IMMEDIATE) instead.
        chosen = (select(C.seq).where(
            C.namespace == namespace, C.deployment == deployment,
            C.status == Status.QUEUED.value, C.not_before <= now)
            .order_by(C.priority.desc(), C.seq).limit(limit).with_for_update(skip_locked=True))
        statement = (update(TABLE).where(C.seq.in_(chosen.scalar_subquery()))
                     .values(status=Status.RUNNING.value, attempts=C.attempts + 1,
                             lease_owner=owner, lease_until=now + lease_s, started_at=now,
                             updated_at=now, finished_at=None, progress=None,
                             progress_message=None)
                     .returning(*COLUMNS, C.seq))
        rows = await self._writer.run(lambda c: c.execute(statement).all())
        # RETURNING keeps no order
        return [_record(row) for row in sorted(rows, key=lambda row: (-row.priority, row.seq))]

    async def renew(self, owner: str, ids: Sequence[str], until: float) -> None:
        if not ids:
            return
        statement = (update(TABLE).where(C.id.in_(list(ids)), C.lease_owner == owner,
                                         C.status == Status.RUNNING.value)
                     .values(lease_until=until))
        await self._writer.run(lambda c: c.execute(statement))

    async def _held(self, owner: str, invocation_id: str,
                    values: dict[str, Any]) -> AsyncInvocation | None:
        statement = (update(TABLE).where(C.id == invocation_id, C.lease_owner == owner,
                                         C.status == Status.RUNNING.value)
                     .values(values).returning(*COLUMNS))
        row = await self._writer.run(lambda c: c.execute(statement).first())
        return None if row is None else _record(row)

    async def finish(self, owner: str, invocation_id: str, status: Status, now: float, *,
                     result: bytes | None = None, error: dict[str, Any] | None = None,
                     revision: int | None = None) -> AsyncInvocation | None:
        if status not in (Status.SUCCEEDED, Status.FAILED, Status.DEAD, Status.CANCELLED):
            raise ValueError(f"finish() ends an attempt; {status} is not an end")
        return await self._held(owner, invocation_id, {
            "status": status.value, "finished_at": now, "updated_at": now, "result": result,
            "error": error, "revision": revision, "lease_owner": None, "lease_until": None})

    async def retry(self, owner: str, invocation_id: str, now: float, not_before: float,
                    error: dict[str, Any], revision: int | None = None) -> AsyncInvocation | None:
        return await self._held(owner, invocation_id, {
            "status": Status.QUEUED.value, "not_before": not_before, "updated_at": now,
            "error": error, "revision": revision, "lease_owner": None, "lease_until": None})

    async def set_progress(self, invocation_id: str, fraction: float, message: str | None,
                           now: float) -> None:
        statement = (update(TABLE).where(C.id == invocation_id, C.status == Status.RUNNING.value)
                     .values(progress=fraction, progress_message=message, updated_at=now))
        await self._writer.run(lambda c: c.execute(statement))

    async def get(self, namespace: str, invocation_id: str) -> AsyncInvocation | None:
        statement = select(*COLUMNS).where(C.id == invocation_id, C.namespace == namespace)
        row = await self._read(lambda c: c.execute(statement).first())
        return None if row is None else _record(row)

    async def page(self, namespace: str, *, deployment: str | None = None,
                   status: Status | None = None, limit: int = 50,
                   cursor: str | None = None) -> Page:
        limit = max(1, limit)
        statement = select(*COLUMNS, C.seq).where(C.namespace == namespace)
        if deployment is not None:
            statement = statement.where(C.deployment == deployment)
        if status is not None:
            statement = statement.where(C.status == status.value)
        if cursor is not None:
            statement = statement.where(C.seq < decode_cursor(cursor))
        statement = statement.order_by(C.seq.desc()).limit(limit + 1)
        rows = await self._read(lambda c: c.execute(statement).all())
        more = len(rows) > limit
        rows = rows[:limit]
        return Page([_record(row) for row in rows],
                    encode_cursor(rows[-1].seq) if more else None)

    async def cancel(self, namespace: str, invocation_id: str,
                     now: float) -> AsyncInvocation | None:
        def op(connection: Connection) -> AsyncInvocation | None:
            row = connection.execute(
                update(TABLE).where(C.id == invocation_id, C.namespace == namespace,
                                    C.status.in_((Status.QUEUED.value, Status.RUNNING.value)))
                .values(status=Status.CANCELLED.value, finished_at=now, updated_at=now,
                        lease_owner=None, lease_until=None)
                .returning(*COLUMNS)).first()
            if row is None:  # unknown, another namespace's, or already terminal
                row = connection.execute(select(*COLUMNS).where(
                    C.id == invocation_id, C.namespace == namespace)).first()
            return None if row is None else _record(row)
        return await self._writer.run(op)

    async def redrive(self, namespace: str, deployment: str, ids: Sequence[str] | None,
                      now: float, expires_at: float) -> list[str]:
        statement = update(TABLE).where(C.namespace == namespace, C.deployment == deployment,
                                        C.status == Status.DEAD.value)
        if ids is not None:
            if not ids:
                return []
            statement = statement.where(C.id.in_(list(ids)))
        # The last error stays until the next attempt ends, so a redriven one still says why.
        statement = statement.values(
            status=Status.QUEUED.value, attempts=0, not_before=now, expires_at=expires_at,
            updated_at=now, finished_at=None, lease_owner=None, lease_until=None,
        ).returning(C.id)
        return await self._writer.run(lambda c: list(c.execute(statement).scalars()))

    async def recover(self, now: float) -> int:
        statement = (update(TABLE).where(C.status == Status.RUNNING.value, C.lease_until < now)
                     .values(status=Status.QUEUED.value, lease_owner=None, lease_until=None,
                             updated_at=now))
        return int(await self._writer.run(lambda c: c.execute(statement).rowcount))

    async def pending(self, now: float) -> dict[tuple[str, str], int]:
        statement = (select(C.namespace, C.deployment, func.count())
                     .where(C.status == Status.QUEUED.value)
                     .group_by(C.namespace, C.deployment))
        rows = await self._read(lambda c: c.execute(statement).all())
        return {(namespace, deployment): int(count) for namespace, deployment, count in rows}

    async def expire(self, now: float) -> list[AsyncInvocation]:
        statement = (update(TABLE).where(C.status == Status.QUEUED.value, C.expires_at < now)
                     .values(status=Status.DEAD.value, finished_at=now, updated_at=now,
                             error=EXPIRED_ERROR, lease_owner=None, lease_until=None)
                     .returning(*COLUMNS))
        rows = await self._writer.run(lambda c: c.execute(statement).all())
        return [_record(row) for row in rows]

    async def purge(self, finished_before: float, dead_before: float) -> int:
        statement = delete(TABLE).where(or_(
            and_(C.status.in_(DONE), C.finished_at < finished_before),
            and_(C.status == Status.DEAD.value, C.finished_at < dead_before)))
        return int(await self._writer.run(lambda c: c.execute(statement).rowcount))
