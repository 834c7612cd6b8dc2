"""A running asynchronous invocation's progress (``ctx.progress``), written to the queue."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from stratus.queue.base import InvocationQueue

log = logging.getLogger("stratus.invocations")

PROGRESS_EVERY_S = 0.25  # the most often a running invocation's progress is written


class ProgressWriter:
    """Writes a running invocation's latest progress at most every PROGRESS_EVERY_S: a handler
    may report in a tight loop."""

    def __init__(self, queue: InvocationQueue, clock: Callable[[], float],
                 invocation_id: str) -> None:
        self.queue = queue
        self.clock = clock
        self.invocation_id = invocation_id
        self.latest: tuple[float, str | None] | None = None
        self.task: asyncio.Task[None] | None = None

    def report(self, fraction: float, message: str | None) -> None:
        self.latest = (min(1.0, max(0.0, fraction)), message)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._write())

    async def _write(self) -> None:
        while self.latest is not None:
            fraction, message = self.latest
            self.latest = None
            try:
                await self.queue.set_progress(self.invocation_id, fraction, message, self.clock())
            except Exception:
                log.exception("writing the progress of %s failed", self.invocation_id)
            await asyncio.sleep(PROGRESS_EVERY_S)

    def close(self) -> None:
        if self.task is not None and not self.task.done() and self.latest is None:
            self.task.cancel()
