"""Group commit on the event loop, for SQLite: the queue's writes of one loop iteration are
committed together by the loop itself, when the database is free at that instant; otherwise
they go to the writer thread, which waits its turn."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Engine

from stratus.queue.writer import MAX_BATCH, GroupWriter, Job, Op, Outcome, Row, Statement, settle

T = TypeVar("T")

# Commits here run with SQLite's automatic checkpoints off (a checkpoint fsyncs, which the loop
# must not wait for); after this many, the writer thread is asked for one.
CHECKPOINT_EVERY = 100


class LoopWriter:
    """The GroupWriter's interface (``run``, ``insert``, ``statement``), with each write
    committed on the caller's event loop: the writes asked for during one iteration of the loop
    share one transaction, begun at the start of the next (a ``call_soon``).

    A hop to the writer thread costs more than SQLite's work on a small batch: two thread
    wake-ups, and a wait for the GIL, which a busy loop holds for up to the switch interval.
    The loop's connection never waits for SQLite's lock (``busy_timeout=0``): when another
    connection holds it (the writer thread, another server on the file), or anything in the
    batch fails, the transaction is rolled back and the whole batch goes to the thread, which
    waits for the lock and runs each write of a failed batch alone, so one bad write fails
    alone, as there."""

    def __init__(self, engine: Engine, thread: GroupWriter) -> None:
        if engine.dialect.name != "sqlite":
            raise ValueError("the loop writer is for SQLite; use the GroupWriter")
        self._engine = engine
        self._thread = thread
        self._connection: Any = None  # the loop's own sqlite3 connection
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop it belongs to
        self._pending: list[Job] = []
        self._commits = 0
        self._open = False
        # While the thread checkpoints, writes go to it (they would only find the lock taken),
        # and the first of them starts the WAL over.
        self._checkpointing = False

    @property
    def commits(self) -> int:
        """Transactions the loop committed itself (not handed to the thread)."""
        return self._commits

    def start(self) -> None:
        self._thread.start()
        self._open = True

    async def stop(self) -> None:
        self._flush()
        self._open = False
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None
        await self._thread.stop()

    async def run(self, op: Callable[[Any], T]) -> T:
        result: T = await self._submit(op)
        return result

    async def insert(self, row: Any) -> None:
        await self._submit(Row(row))

    async def statement(self, sql: str, params: Any, fetch: str = "none") -> Any:
        """One statement; ``fetch``: "one" row, "all" rows, the "rowcount" or "none"."""
        return await self._submit(Statement(sql, params, fetch))

    def read(self, sql: str, params: Any) -> list[Any] | None:
        """One read on the loop's connection (WAL: it never waits for a writer); None when
        it cannot be made here (another loop, the database busy): read elsewhere."""
        if not self._here(asyncio.get_running_loop()):
            return None
        try:
            cursor = self._connect().execute(sql, params)
            try:
                rows: list[Any] = cursor.fetchall()
                return rows
            finally:
                cursor.close()
        except self._engine.dialect.dbapi.OperationalError:  # type: ignore[union-attr]
            return None

    def _here(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether this loop may use the connection: the first loop to write or read has it."""
        if self._loop is None:
            self._loop = loop
        return self._open and loop is self._loop and not self._checkpointing

    async def _submit(self, op: Op | Row | Statement) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._here(loop):
            self._thread.put((op, future, loop))  # raises when the queue is not open
        else:
            self._pending.append((op, future, loop))
            if len(self._pending) == 1:
                loop.call_soon(self._flush)
        return await future

    def _connect(self) -> Any:
        if self._connection is None:
            pooled = self._engine.raw_connection()
            pooled.detach()  # its own: closed, not returned to the pool, when the queue stops
            connection = pooled.dbapi_connection
            assert connection is not None
            connection.isolation_level = None  # transactions are begun and ended here
            connection.execute("PRAGMA busy_timeout=0")
            connection.execute("PRAGMA wal_autocheckpoint=0")
            self._connection = connection
        return self._connection

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        for start in range(0, len(batch), MAX_BATCH):
            self._commit(batch[start:start + MAX_BATCH])

    def _commit(self, batch: list[Job]) -> None:
        outcomes = self._try(batch) if self._open else None
        if outcomes is None:
            for job in batch:
                try:
                    self._thread.put(job)
                except RuntimeError as exc:  # stopped meanwhile
                    settle([(job[1], None, exc)])
            return
        self._commits += 1
        if self._commits % CHECKPOINT_EVERY == 0 and self._loop is not None:
            self._checkpointing = True
            self._thread.checkpoint(self._checkpoint_over)
        settle([(future, value, error) for (_, future, _), value, error in outcomes])

    def _checkpoint_over(self) -> None:
        """From the thread: the loop may write again."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                loop.call_soon_threadsafe(self._checkpointed)

    def _checkpointed(self) -> None:
        self._checkpointing = False

    def _try(self, batch: list[Job]) -> list[Outcome] | None:
        """The batch's outcomes once committed here; None (rolled back) if it could not be."""
        connection = self._connect()
        cursor = connection.cursor()
        try:
            cursor.execute("BEGIN IMMEDIATE")
        except Exception:  # the lock is taken: no waiting on the loop
            cursor.close()
            return None
        try:
            outcomes = self._thread.execute(connection, cursor, batch)
            cursor.execute("COMMIT")
            return outcomes
        except Exception:
            with contextlib.suppress(Exception):
                cursor.execute("ROLLBACK")
            return None
        finally:
            cursor.close()

