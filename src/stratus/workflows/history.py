"""Workflows, executions and step history in the metadata store, through SQLAlchemy Core: one
short statement per write, no ORM session on the hot path. Synchronous; the runner calls the
writes on its own writer thread."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Engine, Table, and_, delete, insert, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from stratus.store.tables import ExecutionRow, WorkflowRow, WorkflowStepRow

WORKFLOWS: Table = cast(Table, WorkflowRow.__table__)
EXECUTIONS: Table = cast(Table, ExecutionRow.__table__)
STEPS: Table = cast(Table, WorkflowStepRow.__table__)
T = TypeVar("T")
_INSERT_STEP = insert(STEPS)
_INSERT_EXECUTION = insert(EXECUTIONS)
TERMINAL = frozenset({"succeeded", "failed", "timed_out", "cancelled"})


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


@dataclass(frozen=True, slots=True)
class ExecutionPage:
    items: list[dict[str, Any]]
    next_cursor: str | None


Work = Callable[[Connection], T]


def create_work(row: dict[str, Any]) -> Work[None]:
    def work(conn: Connection) -> None:
        conn.execute(_INSERT_EXECUTION, row)
    return work


def finish_work(execution_id: str, status: str, output: str | None, error: str | None,
                now: float) -> Work[bool]:
    statement = update(EXECUTIONS).where(
        EXECUTIONS.c.id == execution_id, EXECUTIONS.c.status == "running").values(
        status=status, output=output, error=error, finished_at=now)

    def work(conn: Connection) -> bool:
        return bool(conn.execute(statement).rowcount)
    return work


def step_work(row: dict[str, Any]) -> Work[None]:
    def work(conn: Connection) -> None:
        conn.execute(_INSERT_STEP, row)
    return work


class History:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # The hot path's writes (an execution's start and end, each step's row) go through one
        # connection held open: no pool checkout and reset per step, half the cost of a row.
        # It belongs to the one thread that writes (the runner's writer).
        self._held: Connection | None = None
        self._inline: Connection | None = None  # the event loop's, SQLite only

    def _commit(self, work: Work[T]) -> T:
        """``work`` in a transaction of the held connection; a connection found broken (the
        database restarted) is replaced once."""
        for attempt in (1, 2):
            if self._held is None or self._held.closed or self._held.invalidated:
                self._held = self.engine.connect()
            connection = self._held
            try:
                result = work(connection)
                connection.commit()
                return result
            except DBAPIError as exc:
                connection.rollback()
                if not exc.connection_invalidated or attempt == 2:
                    raise
            except BaseException:
                connection.rollback()
                raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        for connection in (self._held, self._inline):
            if connection is not None:
                connection.close()
        self._held = self._inline = None

    def inline(self, work: Work[T]) -> tuple[bool, T | None]:
        """On SQLite, ``work`` committed at once on the caller's thread (the event loop),
        skipping the hop to the writer thread, which costs more than the write itself: only
        if the database is free this instant (no busy wait), and never with a checkpoint (its
        fsync is left to the other connections). (False, None): not done; hand it to the
        writer."""
        if self.engine.dialect.name != "sqlite":
            return False, None
        if self._inline is None:
            self._inline = self.engine.connect()
            self._inline.exec_driver_sql("PRAGMA busy_timeout=0")
            self._inline.exec_driver_sql("PRAGMA wal_autocheckpoint=0")
            self._inline.commit()
        try:
            result = work(self._inline)
            self._inline.commit()
        except DBAPIError as exc:  # locked by another writer, or a row recorded before
            self._inline.rollback()
            if exc.connection_invalidated:
                self._inline.close()
                self._inline = None  # a new one next time
            return False, None
        return True, result

    # -- workflows ------------------------------------------------------------------------
    def put_workflow(self, namespace: str, name: str, text: str, now: float) -> dict[str, Any]:
        """Create or replace; says which."""
        with self.engine.begin() as conn:
            found = conn.execute(select(WORKFLOWS.c.created_at).where(
                WORKFLOWS.c.namespace == namespace, WORKFLOWS.c.name == name)).first()
            if found is None:
                try:
                    conn.execute(insert(WORKFLOWS).values(namespace=namespace, name=name,
                                                          definition=text, created_at=now,
                                                          updated_at=now))
                except IntegrityError:  # a concurrent create of the same name won
                    return self.put_workflow(namespace, name, text, now)
                return {"name": name, "created_at": now, "updated_at": now, "created": True}
            conn.execute(update(WORKFLOWS).where(
                WORKFLOWS.c.namespace == namespace, WORKFLOWS.c.name == name).values(
                definition=text, updated_at=now))
            return {"name": name, "created_at": found[0], "updated_at": now, "created": False}

    def get_workflow(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(WORKFLOWS).where(
                WORKFLOWS.c.namespace == namespace, WORKFLOWS.c.name == name)).mappings().first()
        return dict(row) if row is not None else None

    def list_workflows(self, namespace: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(WORKFLOWS).where(WORKFLOWS.c.namespace == namespace)
                                .order_by(WORKFLOWS.c.name)).mappings().all()
        return [dict(row) for row in rows]

    def delete_workflow(self, namespace: str, name: str) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(delete(WORKFLOWS).where(
                WORKFLOWS.c.namespace == namespace, WORKFLOWS.c.name == name))
        return bool(result.rowcount)

    # -- executions -----------------------------------------------------------------------
    def create_execution(self, row: dict[str, Any]) -> None:
        self._commit(create_work(row))

    def finish_execution(self, execution_id: str, status: str, output: str | None,
                         error: str | None, now: float) -> bool:
        """Ends a running execution; False when it had already ended (cancelled, say)."""
        return self._commit(finish_work(execution_id, status, output, error, now))

    def get_execution(self, namespace: str, execution_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(EXECUTIONS).where(
                EXECUTIONS.c.id == execution_id, EXECUTIONS.c.namespace == namespace)
            ).mappings().first()
        return dict(row) if row is not None else None

    def running(self) -> list[dict[str, Any]]:
        """Every execution still running, in every namespace: what a start resumes."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(EXECUTIONS).where(EXECUTIONS.c.status == "running")
                                .order_by(EXECUTIONS.c.created_at)).mappings().all()
        return [dict(row) for row in rows]

    def list_executions(self, namespace: str, workflow: str | None, status: str | None,
                        limit: int, cursor: str | None) -> ExecutionPage:
        """Newest first; ``cursor`` is the last page's ``next_cursor``."""
        columns = [c for c in EXECUTIONS.c if c.name not in ("definition", "input", "output")]
        query = select(*columns).where(EXECUTIONS.c.namespace == namespace)
        if workflow:
            query = query.where(EXECUTIONS.c.workflow == workflow)
        if status:
            query = query.where(EXECUTIONS.c.status == status)
        if cursor:
            created, _, last_id = cursor.partition("|")
            at = float(created)
            query = query.where(or_(EXECUTIONS.c.created_at < at, and_(
                EXECUTIONS.c.created_at == at, EXECUTIONS.c.id < last_id)))
        query = query.order_by(EXECUTIONS.c.created_at.desc(), EXECUTIONS.c.id.desc())
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(query.limit(limit + 1)).mappings().all()]
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1] if more and rows else None
        return ExecutionPage(rows, f"{last['created_at']!r}|{last['id']}" if last else None)

    # -- steps ----------------------------------------------------------------------------
    def add_step(self, row: dict[str, Any]) -> None:
        """One ended step, in one short transaction."""
        try:
            self._commit(step_work(row))
        except IntegrityError:  # recorded before a crash, then run again: the last one counts
            self._commit(lambda conn: conn.execute(update(STEPS).where(
                STEPS.c.execution_id == row["execution_id"], STEPS.c.key == row["key"]
            ).values(**row)))

    def steps(self, execution_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(STEPS).where(STEPS.c.execution_id == execution_id)
                                .order_by(STEPS.c.started_at, STEPS.c.key)).mappings().all()
        return [dict(row) for row in rows]
