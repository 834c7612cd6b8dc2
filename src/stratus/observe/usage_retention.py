"""The usage retention, run: every few minutes, the per-request usage records older than the
retention are rolled up into per-minute sums and deleted, a bounded batch at a time, by the
usage writer's child (or a thread), never on the event loop. Which records are due is the
pure policy's answer (``store/retention.py``) for the time the clock gives."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from stratus.store.retention import cutoff, run_every
from stratus.store.usage_rollup import PruneStep

log = logging.getLogger("stratus.usage")

BATCH = 2_000  # records per step: one transaction, so the lock it holds stays short
PAUSE_S = 0.05  # between two steps that rolled something: the meter's writes go first

# (cursor, cutoff, limit) -> the step done: ProcessWriter.prune, or UsageStore.prune on a
# thread
Pruner = Callable[[str, float, int], Awaitable[PruneStep]]


class UsageRetention:
    """Runs the retention every ``every_s`` (by default ``retention.run_every``); ``run_once``
    is one run, for the time ``clock`` gives. A failed run (a full disk, the store down) is
    logged and tried again at the next period: nothing else waits for it."""

    def __init__(self, prune: Pruner, retention_s: float, *, every_s: float | None = None,
                 batch: int = BATCH, pause_s: float = PAUSE_S,
                 clock: Callable[[], float] = time.time) -> None:
        self._prune = prune
        self.retention_s = retention_s
        self.every_s = run_every(retention_s) if every_s is None else every_s
        self.batch = batch
        self.pause_s = pause_s
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.rolled = 0  # records rolled up and deleted since the start
        self.failures = 0

    async def run_once(self) -> int:
        """Roll up and delete every record due now; how many there were."""
        due_before = cutoff(self._clock(), self.retention_s)
        if due_before is None:
            return 0
        rolled = 0
        cursor: str | None = ""
        while cursor is not None and not self._stopping.is_set():
            step = await self._prune(cursor, due_before, self.batch)
            rolled += step.rolled
            self.rolled += step.rolled
            cursor = step.next
            if step.rolled:
                await asyncio.sleep(self.pause_s)
        if rolled:
            log.info("usage retention: rolled %d usage records that started before %s up into "
                     "per-minute sums and deleted them", rolled,
                     datetime.fromtimestamp(due_before, UTC).isoformat())
        return rolled

    def start(self) -> None:
        if cutoff(self._clock(), self.retention_s) is not None:
            self._task = asyncio.create_task(self._running(), name="usage-retention")

    async def close(self) -> None:
        """Stop after the step under way (one batch), not within it."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            await task

    async def _running(self) -> None:
        while not self._stopping.is_set():
            # First after a period, not at the start: a server starting is busy enough.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.every_s)
            if self._stopping.is_set():
                return
            try:
                await self.run_once()
            except Exception as exc:
                self.failures += 1
                log.warning("usage retention: this run stopped, the next is in %g s: %s",
                            self.every_s, exc)
