"""The queue in the metadata store's database: SQLite (WAL) by default, PostgreSQL when
configured. Writes are group-committed: on SQLite by the event loop itself when the database is
free (else by the writer thread), on PostgreSQL by the writer thread; listings run in worker
threads."""

from __future__ import annotations

import asyncio
import operator
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from stratus.errors import Conflict, IdempotencyConflict
from stratus.queue.compiled import FIELDS, Compiled, dumps, record
from stratus.queue.inline import LoopWriter
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
COLUMNS = tuple(C[name] for name in FIELDS)
QUEUED, RUNNING, DEAD = Status.QUEUED.value, Status.RUNNING.value, Status.DEAD.value
NO_LEASE = {"lease_owner": None, "lease_until": None}


_FIELDS_OF = operator.attrgetter(*FIELDS)  # a record's fields as a tuple, in one C call
_STATUS, _ERROR, _SOURCE = (FIELDS.index(name) for name in ("status", "error", "source"))


def _row(new: AsyncInvocation) -> list[Any]:
    """A record's column values, in FIELDS order (the insert's positional parameters)."""
    row = list(_FIELDS_OF(new))
    row[_STATUS] = new.status.value
    row[_ERROR], row[_SOURCE] = dumps(new.error), dumps(new.source)
    return row


def _values(new: AsyncInvocation) -> dict[str, Any]:
    return dict(zip(FIELDS, _row(new), strict=True))


def _p(name: str) -> Any:
    return bindparam(f"p_{name}")


def _statements(dialect: Any) -> dict[str, Compiled]:
    """Every write, compiled once. Parameters are named ``p_*``."""
    upsert = (postgresql.insert if dialect.name == "postgresql" else sqlite.insert)
    held = (C.id == _p("id")) & (C.lease_owner == _p("owner")) & (C.status == RUNNING)
    key = (C.namespace == _p("ns")) & (C.idempotency_key == _p("key"))
    dead = (C.namespace == _p("ns")) & (C.deployment == _p("dep")) & (C.status == DEAD)
    redriven = {"status": QUEUED, "attempts": 0, "not_before": _p("now"),
                "expires_at": _p("expires_at"), "updated_at": _p("now"), "finished_at": None,
                **NO_LEASE}
    # FOR UPDATE SKIP LOCKED on PostgreSQL: a claimer passes over rows another claimer's open
    # transaction holds instead of waiting for them. SQLite renders no FOR UPDATE: its writer
    # holds the database's one write lock (BEGIN IMMEDIATE) instead.
    finish = update(TABLE).where(held).values(
        status=_p("status"), finished_at=_p("now"), updated_at=_p("now"),
        result=_p("result"), error=_p("error"), revision=_p("revision"), **NO_LEASE)
    chosen = (select(C.seq).where(C.namespace == _p("ns"), C.deployment == _p("dep"),
                                  C.status == QUEUED, C.not_before <= _p("now"))
              .order_by(C.priority.desc(), C.seq).limit(_p("limit"))
              .with_for_update(skip_locked=True))
    statements: dict[str, Any] = {
        "insert": (insert(TABLE), FIELDS),
        "insert_keyed": (upsert(TABLE).on_conflict_do_nothing().returning(C.seq), FIELDS),
        "free_key": update(TABLE).where(key, C.created_at < _p("before"))
                    .values(idempotency_key=None),
        "by_key": select(*COLUMNS).where(key),
        "by_id": select(*COLUMNS).where(C.id == _p("id"), C.namespace == _p("ns")),
        "claim": update(TABLE).where(C.seq.in_(chosen.scalar_subquery())).values(
            status=RUNNING, attempts=C.attempts + 1, lease_owner=_p("owner"),
            lease_until=_p("until"), started_at=_p("now"), updated_at=_p("now"),
            finished_at=None, progress=None, progress_message=None,
        ).returning(*COLUMNS, C.seq),
        "renew": update(TABLE).where(held).values(lease_until=_p("until")),
        "finish": finish.returning(*COLUMNS),
        "end": finish,
        "retry": update(TABLE).where(held).values(
            status=QUEUED, not_before=_p("not_before"), updated_at=_p("now"),
            error=_p("error"), revision=_p("revision"), **NO_LEASE,
        ).returning(*COLUMNS),
        "progress": update(TABLE).where(C.id == _p("id"), C.status == RUNNING).values(
            progress=_p("fraction"), progress_message=_p("message"), updated_at=_p("now")),
        "cancel": update(TABLE).where(
            C.id == _p("id"), C.namespace == _p("ns"),
            or_(C.status == QUEUED, C.status == RUNNING),
        ).values(status=Status.CANCELLED.value, finished_at=_p("now"), updated_at=_p("now"),
                 **NO_LEASE).returning(*COLUMNS),
        "redrive_all": update(TABLE).where(dead).values(redriven).returning(C.id),
        "redrive_one": update(TABLE).where(dead, C.id == _p("id")).values(redriven)
                       .returning(C.id),
        "recover": update(TABLE).where(C.status == RUNNING, C.lease_until < _p("now"))
                   .values(status=QUEUED, updated_at=_p("now"), **NO_LEASE),
        "expire": update(TABLE).where(C.status == QUEUED, C.expires_at < _p("now")).values(
            status=DEAD, finished_at=_p("now"), updated_at=_p("now"), error=_p("error"),
            **NO_LEASE).returning(*COLUMNS),
        "purge": delete(TABLE).where(or_(
            and_(or_(C.status == Status.SUCCEEDED.value, C.status == Status.FAILED.value,
                     C.status == Status.CANCELLED.value),
                 C.finished_at < _p("finished_before")),
            and_(C.status == DEAD, C.finished_at < _p("dead_before")))),
    }
    return {name: Compiled(spec[0], dialect, spec[1]) if isinstance(spec, tuple)
            else Compiled(spec, dialect)
            for name, spec in statements.items()}


class SqlQueue:
    """InvocationQueue on a SQLAlchemy engine (``stratus.store.db.make_engine``)."""

    def __init__(self, engine: Engine) -> None:
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise ValueError(f"the SQL queue runs on SQLite or PostgreSQL, not "
                             f"{engine.dialect.name}")
        self._engine = engine
        self._sql = _statements(engine.dialect)
        # SQLite's parameters are positional, in the insert's column order: FIELDS.
        self._insert_by_position = self._sql["insert"].positional_in(FIELDS)
        thread = GroupWriter(engine, self._sql["insert"].run_many)
        self._inline = LoopWriter(engine, thread) if engine.dialect.name == "sqlite" else None
        self._writer: GroupWriter | LoopWriter = self._inline or thread

    async def open(self) -> None:
        await asyncio.to_thread(self._writer.start)

    async def close(self) -> None:
        await self._writer.stop()

    async def _read(self, op: Callable[[Connection], T]) -> T:
        def run() -> T:
            with self._engine.connect() as connection:
                return op(connection)
        return await asyncio.to_thread(run)

    def _alone(self, statement: Compiled, values: dict[str, Any]) -> list[Any]:
        connection = self._engine.raw_connection()
        try:
            cursor = connection.cursor()
            rows = list(statement.run(cursor, values).fetchall())
            connection.commit()
            return rows
        except BaseException:
            connection.rollback()
            raise
        finally:
            connection.close()

    async def _one(self, name: str, values: dict[str, Any]) -> AsyncInvocation | None:
        """One write returning at most one record."""
        statement = self._sql[name]
        row = await self._writer.statement(statement.sql, statement.params(values), "one")
        return None if row is None else record(row)

    async def enqueue(self, new: NewInvocation, now: float) -> tuple[AsyncInvocation, bool]:
        created = created_record(new, now)
        if new.idempotency_key is None:
            params = (tuple(_row(created)) if self._insert_by_position
                      else self._sql["insert"].params(_values(created)))
            try:
                await self._writer.insert(params)
            except self._engine.dialect.dbapi.IntegrityError:  # type: ignore[union-attr]
                raise Conflict(f"invocation {new.id} already exists") from None
            return created, True
        values = _values(created)
        return await self._writer.run(lambda cursor: self._keyed(cursor, created, values, now))

    def _keyed(self, cursor: Any, created: AsyncInvocation, values: dict[str, Any],
               now: float) -> tuple[AsyncInvocation, bool]:
        key = {"p_ns": created.namespace, "p_key": created.idempotency_key}
        # A key older than the window names nothing any more: free it for this invocation.
        self._sql["free_key"].run(cursor, {**key, "p_before": now - IDEMPOTENCY_WINDOW_S})
        # The unique (namespace, idempotency_key) decides between racing repeats, in this
        # process or another: the loser inserts nothing and reads the winner.
        if self._sql["insert_keyed"].run(cursor, values).fetchone() is not None:
            return created, True
        row = self._sql["by_key"].run(cursor, key).fetchone()
        if row is None:
            raise Conflict(f"invocation {created.id} already exists")
        existing = record(row)
        if existing.digest != created.digest:
            raise IdempotencyConflict(
                f"idempotency key {created.idempotency_key!r} was used for invocation "
                f"{existing.id} with another body")
        return existing, False

    async def claim(self, owner: str, namespace: str, deployment: str, limit: int, now: float,
                    lease_s: float) -> list[AsyncInvocation]:
        if limit <= 0:
            return []
        values = {"p_ns": namespace, "p_dep": deployment, "p_now": now, "p_limit": limit,
                  "p_owner": owner, "p_until": now + lease_s}
        statement = self._sql["claim"]
        if self._engine.dialect.name == "postgresql":
            # A claim of its own, in its own transaction: claimers then skip each other's
            # locked rows (SKIP LOCKED) instead of queueing behind the writer, and no claim
            # has to step over the rows an earlier claim of the same batch just took.
            rows = await asyncio.to_thread(self._alone, statement, values)
        else:
            rows = await self._writer.statement(statement.sql, statement.params(values), "all")
        rows.sort(key=lambda row: (-row[FIELDS.index("priority")], row[-1]))  # RETURNING: any order
        return [record(row) for row in rows]

    async def renew(self, owner: str, ids: Sequence[str], until: float) -> None:
        def op(cursor: Any) -> None:
            for invocation_id in ids:
                self._sql["renew"].run(cursor, {"p_id": invocation_id, "p_owner": owner,
                                                "p_until": until})
        if ids:
            await self._writer.run(op)

    async def finish(self, owner: str, invocation_id: str, status: Status, now: float, *,
                     result: bytes | None = None, error: dict[str, Any] | None = None,
                     revision: int | None = None) -> AsyncInvocation | None:
        if status not in (Status.SUCCEEDED, Status.FAILED, Status.DEAD, Status.CANCELLED):
            raise ValueError(f"finish() ends an attempt; {status} is not an end")
        return await self._one("finish", {
            "p_id": invocation_id, "p_owner": owner, "p_status": status.value, "p_now": now,
            "p_result": result, "p_error": dumps(error), "p_revision": revision})

    async def end(self, owner: str, invocation_id: str, status: Status, now: float, *,
                  result: bytes | None = None, error: dict[str, Any] | None = None,
                  revision: int | None = None) -> bool:
        if self._engine.dialect.name == "postgresql":  # its pipelined batch: rows, not counts
            return await self.finish(owner, invocation_id, status, now, result=result,
                                     error=error, revision=revision) is not None
        if status not in (Status.SUCCEEDED, Status.FAILED, Status.DEAD, Status.CANCELLED):
            raise ValueError(f"end() ends an attempt; {status} is not an end")
        statement = self._sql["end"]
        values = {"p_id": invocation_id, "p_owner": owner, "p_status": status.value,
                  "p_now": now, "p_result": result, "p_error": dumps(error),
                  "p_revision": revision}
        count = await self._writer.statement(statement.sql, statement.params(values),
                                             "rowcount")
        return bool(count)

    async def retry(self, owner: str, invocation_id: str, now: float, not_before: float,
                    error: dict[str, Any], revision: int | None = None) -> AsyncInvocation | None:
        return await self._one("retry", {
            "p_id": invocation_id, "p_owner": owner, "p_now": now, "p_not_before": not_before,
            "p_error": dumps(error), "p_revision": revision})

    async def set_progress(self, invocation_id: str, fraction: float, message: str | None,
                           now: float) -> None:
        values = {"p_id": invocation_id, "p_fraction": fraction, "p_message": message,
                  "p_now": now}
        statement = self._sql["progress"]
        await self._writer.statement(statement.sql, statement.params(values))

    async def get(self, namespace: str, invocation_id: str) -> AsyncInvocation | None:
        by_id = self._sql["by_id"]
        params = by_id.params({"p_id": invocation_id, "p_ns": namespace})
        rows = self._inline.read(by_id.sql, params) if self._inline is not None else None
        if rows is None:  # PostgreSQL, or not here: in a worker thread
            rows = list(await self._read(lambda c: c.exec_driver_sql(by_id.sql, params).all()))
        return record(rows[0]) if rows else None

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
        return Page([record(row) for row in rows],
                    encode_cursor(rows[-1].seq) if more else None)

    async def cancel(self, namespace: str, invocation_id: str,
                     now: float) -> AsyncInvocation | None:
        key = {"p_id": invocation_id, "p_ns": namespace}

        def op(cursor: Any) -> AsyncInvocation | None:
            row = self._sql["cancel"].run(cursor, {**key, "p_now": now}).fetchone()
            if row is None:  # unknown, another namespace's, or already terminal
                row = self._sql["by_id"].run(cursor, key).fetchone()
            return None if row is None else record(row)
        return await self._writer.run(op)

    async def redrive(self, namespace: str, deployment: str, ids: Sequence[str] | None,
                      now: float, expires_at: float) -> list[str]:
        # The last error stays until the next attempt ends, so a redriven one still says why.
        values = {"p_ns": namespace, "p_dep": deployment, "p_now": now,
                  "p_expires_at": expires_at}

        def op(cursor: Any) -> list[str]:
            if ids is None:
                return [row[0] for row in self._sql["redrive_all"].run(cursor, values)]
            moved = []
            for invocation_id in ids:
                row = self._sql["redrive_one"].run(
                    cursor, {**values, "p_id": invocation_id}).fetchone()
                if row is not None:
                    moved.append(row[0])
            return moved
        return await self._writer.run(op)

    async def recover(self, now: float) -> int:
        return int(await self._writer.run(
            lambda cursor: self._sql["recover"].run(cursor, {"p_now": now}).rowcount))

    async def pending(self, now: float) -> dict[tuple[str, str], int]:
        statement = (select(C.namespace, C.deployment, func.count())
                     .where(C.status == QUEUED).group_by(C.namespace, C.deployment))
        rows = await self._read(lambda c: c.execute(statement).all())
        return {(namespace, deployment): int(count) for namespace, deployment, count in rows}

    async def expire(self, now: float) -> list[AsyncInvocation]:
        values = {"p_now": now, "p_error": dumps(EXPIRED_ERROR)}
        rows = await self._writer.run(
            lambda cursor: self._sql["expire"].run(cursor, values).fetchall())
        return [record(row) for row in rows]

    async def purge(self, finished_before: float, dead_before: float) -> int:
        values = {"p_finished_before": finished_before, "p_dead_before": dead_before}
        return int(await self._writer.run(
            lambda cursor: self._sql["purge"].run(cursor, values).rowcount))
