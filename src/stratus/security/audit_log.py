"""The audit log's single writer: events wait in a bounded in-memory queue and one thread chains
them and writes them in order, so the request path never waits for the database."""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Protocol

from stratus.errors import storage_full
from stratus.resilience.disk import DiskHealth
from stratus.security.audit import AuditEvent, AuditRecord, Result, chain
from stratus.security.checkpointer import Checkpointer

log = logging.getLogger("stratus.audit")

MAX_QUEUED = 10_000  # about 5 MB of events while the database is slow or away
BATCH = 500  # events per transaction, at most
POLL_S = 0.2  # how soon an idle writer notices that the log is closing
MAX_RETRY_S = 5.0
CLOSE_ATTEMPTS = 5  # writes tried while closing before the rest goes to the server log
WARN_EVERY_S = 10.0
FLUSH_WAIT_S = 5.0
MAX_CONFLICTS = 20  # ids taken by another writer, re-chained at once before backing off


class ChainConflict(Exception):
    """Another writer on the same database took the next record id first: nothing was written."""


class AuditRecords(Protocol):
    """Where the chain is kept (``store.audit.AuditStore``); called from the writer thread."""

    def tail(self) -> AuditRecord | None:
        """The newest record: the next one chains onto it."""
        ...

    def append(self, records: Sequence[AuditRecord]) -> None:
        """All of them in one transaction, or none (``ChainConflict`` when an id is taken)."""
        ...


class AuditLog:
    """``append`` (on the event loop's thread) never blocks: a full queue drops the event and
    counts it, and the writer then chains an ``audit.dropped`` record saying how many were lost.
    Denials may fill only half the queue, so a flood of bad credentials cannot crowd out the
    record of a mutation. ``close`` writes everything queued before it returns."""

    def __init__(self, max_queued: int = MAX_QUEUED, batch: int = BATCH) -> None:
        self._queue: queue.Queue[AuditEvent] = queue.Queue(max_queued)
        self._denied_room = max_queued // 2
        self._batch = batch
        self.store: AuditRecords | None = None  # set by start
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._progress = threading.Condition()
        self.accepted = 0  # queued events; the loop's thread alone counts them
        self.dropped = 0
        self.written = 0  # settled events (saved, or logged when saving failed at close)
        self._reported_drops = 0  # the writer's: drops already told of in the chain
        self._warned_at = -WARN_EVERY_S
        self._tail: AuditRecord | None = None
        self._tail_known = False
        self.checkpoints: Checkpointer | None = None  # set by start, if the log is anchored
        self.disk = DiskHealth()  # the server's own is set in its place: /readyz reads it

    # -- request path -------------------------------------------------------------------
    def append(self, event: AuditEvent) -> bool:
        if event.result == Result.DENIED and self._queue.qsize() >= self._denied_room:
            return self._drop()
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            return self._drop()
        self.accepted += 1
        return True

    def _drop(self) -> bool:
        self.dropped += 1
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            log.warning("the audit queue is full: %d audit records dropped so far", self.dropped)
        return False

    # -- life cycle -----------------------------------------------------------------------
    def start(self, store: AuditRecords, checkpoints: Checkpointer | None = None) -> None:
        self.store = store
        self.checkpoints = checkpoints
        if checkpoints is not None:
            self.accepted += 1  # the start's own record: a flush waits for it and its checkpoint
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    async def flush(self) -> bool:
        """Wait until what was appended before this call is written; False after
        ``FLUSH_WAIT_S`` (the database is away: the answer goes without the newest records)."""
        target = self.accepted
        if self.written >= target:
            return True
        return await asyncio.to_thread(self._wait_written, target, FLUSH_WAIT_S)

    async def close(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    def _wait_written(self, target: int, timeout: float) -> bool:
        with self._progress:
            return self._progress.wait_for(lambda: self.written >= target, timeout)

    # -- the writer thread ------------------------------------------------------------------
    def _run(self) -> None:
        checkpoints = self.checkpoints
        if checkpoints is not None:  # before anything else
            self._write([checkpoints.opening()])
            checkpoints.tick(force=True)
            with self._progress:
                self.written += 1
                self._progress.notify_all()
        while True:
            events = self._take()
            notice = self._drop_notice()
            if events or notice:
                self._write(events + notice)
                if checkpoints is not None:  # before a flush returns: verify sees it
                    checkpoints.tick()
                with self._progress:
                    self.written += len(events)
                    self._progress.notify_all()
            elif self._stopping.is_set() and self._queue.empty():
                if checkpoints is not None:
                    self._write([checkpoints.closing()])
                    checkpoints.tick(force=True)
                return
            elif checkpoints is not None:
                checkpoints.tick()  # idle: the interval may have run out

    def _take(self) -> list[AuditEvent]:
        try:
            events = [self._queue.get(timeout=POLL_S)]
        except queue.Empty:
            return []
        while len(events) < self._batch:
            try:
                events.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return events

    def _drop_notice(self) -> list[AuditEvent]:
        """A record of the events dropped since the last notice, if any were."""
        drops = self.dropped - self._reported_drops
        if drops <= 0:
            return []
        self._reported_drops += drops
        return [AuditEvent(time.time(), "", "stratus", "audit.dropped", f"{drops} records", "",
                           Result.ERROR, 0)]

    def _write(self, events: list[AuditEvent]) -> None:
        assert self.store is not None
        attempt = conflicts = 0
        while True:
            try:
                if not self._tail_known:
                    self._tail, self._tail_known = self.store.tail(), True
                records = chain(self._tail, events)
                self.store.append(records)
                self._tail = records[-1]
                self.disk.succeeded("audit")
                if self.checkpoints is not None:
                    self.checkpoints.wrote(records[-1], len(records))
                break
            except Exception as exc:
                # The tail may have moved or the write half-happened: read it again.
                self._tail_known = False
                full = storage_full(exc)
                if full is not None:  # kept queued and retried: written once space is back
                    self.disk.failed("audit", full.message)
                if isinstance(exc, ChainConflict) and conflicts < MAX_CONFLICTS:
                    conflicts += 1  # another server took the next id: chain onto its record
                    continue
                attempt += 1
                if self._stopping.is_set() and attempt >= CLOSE_ATTEMPTS:
                    lines = "\n".join(json.dumps(asdict(event)) for event in events)
                    log.error("could not save %d audit records (%s); here they are:\n%s",
                              len(events), exc, lines)
                    break
                if attempt == 1 or attempt % 10 == 0:
                    log.warning("could not save %d audit records (attempt %d): %s; retrying",
                                len(events), attempt, exc)
                time.sleep(min(MAX_RETRY_S, 0.1 * 2 ** min(attempt, 10)))
