"""Group commit: one thread owns a writing connection and commits every write that is waiting
as one transaction, so concurrent enqueues, claims and finishes share one commit (and, on
PostgreSQL, one fsync)."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

from stratus.errors import StratusError

T = TypeVar("T")
Op = Callable[[Connection], Any]
_Job = tuple[Op, "asyncio.Future[Any]", asyncio.AbstractEventLoop]

MAX_BATCH = 256  # writes per transaction: bounds how long one commit holds SQLite's lock


def _settle(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, value, error in outcomes:
        if future.cancelled():
            continue  # its caller gave up waiting; the write itself stands
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


class GroupWriter:
    """``await writer.run(op)`` runs ``op(connection)`` in the writer thread and returns once
    the transaction holding it is committed. An op's StratusError (a 422, say) is its own
    outcome and does not undo the batch; any other error rolls the batch back, and each op
    of it is then run again in a transaction of its own, so one bad write fails alone."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="stratus-queue-writer",
                                        daemon=True)
        self._thread.start()
        self._ready.wait()

    async def stop(self) -> None:
        if self._thread is None:
            return
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    async def run(self, op: Callable[[Connection], T]) -> T:
        if self._thread is None:
            raise RuntimeError("the queue is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((op, future, loop))
        return await future

    def _run(self) -> None:
        with self._engine.connect() as connection:
            raw = connection.connection.dbapi_connection
            sqlite = self._engine.dialect.name == "sqlite"
            if sqlite:
                # Take SQLite's write lock when the transaction starts (BEGIN IMMEDIATE), not
                # at its first write: a deferred one that read first could not upgrade when
                # another connection wrote meanwhile, and would fail instead of waiting.
                raw.isolation_level = "IMMEDIATE"  # type: ignore[union-attr]
            self._ready.set()
            try:
                self._loop(connection)
            finally:
                if sqlite:
                    raw.isolation_level = ""  # type: ignore[union-attr]  # as the pool lent it

    def _loop(self, connection: Connection) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            batch = [job]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            self._commit(connection, batch)
            if stop:
                return

    def _commit(self, connection: Connection, batch: list[_Job]) -> None:
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        try:
            for job in batch:
                try:
                    outcomes.append((job, job[0](connection), None))
                except StratusError as exc:
                    outcomes.append((job, None, exc))
            connection.commit()
        except Exception as exc:
            connection.rollback()
            if len(batch) > 1:
                for job in batch:
                    self._commit(connection, [job])
                return
            outcomes = [(batch[0], None, exc)]
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for (_, future, loop), value, error in outcomes:
            by_loop.setdefault(loop, []).append((future, value, error))
        for loop, settled in by_loop.items():
            if not loop.is_closed():
                loop.call_soon_threadsafe(_settle, settled)
