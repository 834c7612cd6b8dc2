"""Group commit: one thread owns a writing connection and commits every write that is waiting
as one transaction, so concurrent enqueues, claims and finishes share one commit (and, on
PostgreSQL, one fsync)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

from sqlalchemy import Engine

from stratus.errors import StratusError

log = logging.getLogger("stratus.queue")
T = TypeVar("T")
Op = Callable[[Any], Any]  # given the transaction's DBAPI cursor
Job = tuple["Op | Row | Statement", "asyncio.Future[Any]", asyncio.AbstractEventLoop]
Outcome = tuple[Job, Any, BaseException | None]

MAX_BATCH = 256  # writes per transaction: bounds how long one commit holds SQLite's lock


def settle(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    """Sets each future's outcome, on its own loop's thread."""
    for future, value, error in outcomes:
        if future.cancelled():
            continue  # its caller gave up waiting; the write itself stands
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


class Row:
    """A job that is a row to insert, not an op."""

    __slots__ = ("row",)

    def __init__(self, row: Any) -> None:
        self.row = row


class Statement:
    """A job that is one statement, and what of its result to give back: on PostgreSQL the
    statements of a batch are pipelined (sent together, their results read after), so the
    batch costs one round trip rather than one per write."""

    __slots__ = ("fetch", "params", "sql")

    def __init__(self, sql: str, params: Any, fetch: str) -> None:
        self.sql, self.params, self.fetch = sql, params, fetch

    def result(self, cursor: Any) -> Any:
        if self.fetch == "one":
            return cursor.fetchone()
        if self.fetch == "rowcount":
            return cursor.rowcount
        return cursor.fetchall() if self.fetch == "all" else None


class _Checkpoint:
    """The job that asks the thread for a WAL checkpoint, outside any transaction, and what
    to call (from the thread) once it is over."""

    __slots__ = ("done",)

    def __init__(self, done: Callable[[], None] | None) -> None:
        self.done = done


class GroupWriter:
    """``await writer.run(op)`` runs ``op(cursor)`` in the writer thread and returns once
    the transaction holding it is committed. An op's StratusError (a 422, say) is its own
    outcome and does not undo the batch; any other error rolls the batch back, and each op
    of it is then run again in a transaction of its own, so one bad write fails alone."""

    def __init__(self, engine: Engine,
                 insert_many: Callable[[Any, list[Any]], None] | None = None) -> None:
        self._engine = engine
        self._insert_many = insert_many
        self._jobs: queue.SimpleQueue[Job | _Checkpoint | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: Exception | None = None

    def start(self) -> None:
        """Connects (in the thread), raising what connecting raised."""
        self._thread = threading.Thread(target=self._run, name="stratus-queue-writer",
                                        daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            self._thread.join()
            self._thread = None
            raise self._start_error

    async def stop(self) -> None:
        if self._thread is None:
            return
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    async def run(self, op: Callable[[Any], T]) -> T:
        result: T = await self._submit(op)
        return result

    async def insert(self, row: Any) -> None:
        """Inserts ``row`` with ``insert_many``: the rows waiting in a batch go in one
        ``executemany`` (one round trip on PostgreSQL, where psycopg pipelines it)."""
        await self._submit(Row(row))

    async def statement(self, sql: str, params: Any, fetch: str = "none") -> Any:
        """Runs one statement; ``fetch``: "one" row, "all" rows, the "rowcount" or "none"."""
        return await self._submit(Statement(sql, params, fetch))

    async def _submit(self, op: Op | Row | Statement) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.put((op, future, loop))
        return await future

    def put(self, job: Job) -> None:
        """Hands a job to the thread; its future is settled on its loop once committed."""
        if self._thread is None:
            raise RuntimeError("the queue is not open")
        self._jobs.put(job)

    def checkpoint(self, done: Callable[[], None] | None = None) -> None:
        """Asks the thread for a WAL checkpoint (SQLite), for writers that commit with
        automatic checkpoints off. RESTART: it takes the write lock (other writers wait for it,
        or hand their writes here), copies the WAL into the database, fsyncs it, and waits for
        readers to leave the WAL, so that the next writer starts the WAL over rather than
        making it longer. ``done`` is called from the thread once it is over, done or not."""
        if self._thread is not None:
            self._jobs.put(_Checkpoint(done))

    def _run(self) -> None:
        try:
            connection = self._connect()
        except Exception as exc:
            self._start_error = exc
            return
        finally:
            self._ready.set()
        try:
            connection = self._loop(connection)
        finally:
            self._release(connection)

    def _connect(self) -> Any:
        connection = self._engine.raw_connection()
        if self._engine.dialect.name == "sqlite":
            # Take SQLite's write lock when the transaction starts (BEGIN IMMEDIATE), not at
            # its first write: a deferred one that read first could not upgrade when another
            # connection wrote meanwhile, and would fail instead of waiting its turn.
            connection.dbapi_connection.isolation_level = "IMMEDIATE"  # type: ignore[union-attr]
        return connection

    def _release(self, connection: Any) -> None:
        if connection is None:
            return
        try:
            if self._engine.dialect.name == "sqlite":
                connection.dbapi_connection.isolation_level = ""  # as the pool lent it
            connection.close()
        except Exception:
            connection.invalidate()

    def _loop(self, connection: Any) -> Any:
        while True:
            job = self._jobs.get()
            if job is None:
                return connection
            batch: list[Job] = []
            stop = False
            checkpoint: _Checkpoint | None = None
            while True:
                if job is None:
                    stop = True
                    break
                if isinstance(job, _Checkpoint):
                    checkpoint = job  # after the writes asked for before it
                    break
                batch.append(job)
                if len(batch) >= MAX_BATCH:
                    break
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
            try:
                if batch:
                    connection = self._commit(connection, batch)
            except BaseException as exc:  # never leave a caller waiting for ever
                self._settle([(job, None, exc) for job in batch])
                if not isinstance(exc, Exception):
                    raise
            if checkpoint is not None:
                self._checkpoint(connection, checkpoint)
            if stop:
                return connection

    def _checkpoint(self, connection: Any, job: _Checkpoint) -> None:
        try:
            if connection is not None and self._engine.dialect.name == "sqlite":
                connection.dbapi_connection.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
        except Exception:  # busy, say: the next one copies what this one could not
            log.debug("a WAL checkpoint failed", exc_info=True)
        finally:
            if job.done is not None:
                job.done()

    def _commit(self, connection: Any, batch: list[Job]) -> Any:
        """Runs the batch in one transaction; the connection to go on with (None when this
        one broke: the next batch connects again)."""
        if connection is None:
            try:
                connection = self._connect()
            except Exception as exc:  # the database is away: this batch fails, not the thread
                self._settle([(job, None, exc) for job in batch])
                return None
        try:
            cursor = connection.cursor()
            try:
                outcomes = self.execute(connection, cursor, batch)
            finally:
                cursor.close()
            connection.commit()
        except Exception as exc:
            try:
                connection.rollback()
            except Exception:
                with contextlib.suppress(Exception):
                    connection.invalidate()
                connection = None
            if len(batch) > 1:
                for job in batch:
                    connection = self._commit(connection, [job])
                return connection
            outcomes = [(batch[0], None, exc)]
        self._settle(outcomes)
        return connection

    def execute(self, connection: Any, cursor: Any, batch: list[Job]) -> list[Outcome]:
        """The batch's writes on ``cursor``, inside a transaction the caller opened and
        commits: the outcome of each job (an op's StratusError is its own outcome); any other
        error is raised, for the caller to roll the whole batch back."""
        outcomes: list[Outcome] = []
        rows = [job for job in batch if isinstance(job[0], Row)]
        if rows and self._insert_many is not None:
            self._insert_many(cursor, [cast(Row, job[0]).row for job in rows])
            outcomes += [(job, None, None) for job in rows]
        statements = [job for job in batch if isinstance(job[0], Statement)]
        if statements:
            outcomes += self._statements(connection, cursor, statements)
        for job in batch:
            if isinstance(job[0], Row | Statement):
                continue
            try:
                outcomes.append((job, job[0](cursor), None))
            except StratusError as exc:
                outcomes.append((job, None, exc))
        return outcomes

    def _statements(self, connection: Any, cursor: Any,
                    jobs: list[Job]) -> list[Outcome]:
        out: list[Outcome] = []
        if self._engine.dialect.name != "postgresql" or len(jobs) == 1:
            for job in jobs:
                statement = cast(Statement, job[0])
                cursor.execute(statement.sql, statement.params)
                out.append((job, statement.result(cursor), None))
            return out
        raw = connection.dbapi_connection
        with raw.pipeline():  # psycopg: one round trip for them all
            cursors = []
            for job in jobs:
                statement = cast(Statement, job[0])
                cursors.append(raw.cursor())
                cursors[-1].execute(statement.sql, statement.params)
            out += [(job, cast(Statement, job[0]).result(each), None)
                    for job, each in zip(jobs, cursors, strict=True)]
        for each in cursors:
            each.close()
        return out

    def _settle(self, outcomes: list[Outcome]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for (_, future, loop), value, error in outcomes:
            by_loop.setdefault(loop, []).append((future, value, error))
        for loop, settled in by_loop.items():
            if not loop.is_closed():
                loop.call_soon_threadsafe(settle, settled)
