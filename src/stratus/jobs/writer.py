"""Appends job events to the log off the event loop, on one thread, so they are stored in the
order they were handed over: a job's events in the order its worker made them. Listeners
(an MLflow mirror) hear each event once it is stored, in that order."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from stratus.jobs.events import JobEvent
from stratus.jobs.log import JobLog

log = logging.getLogger("stratus.jobs")
# Told (namespace, event) on the event loop after each append; it must not block.
Listener = Callable[[str, JobEvent], None]


class EventWriter:
    def __init__(self, log: JobLog) -> None:
        self.log = log
        self.listeners: list[Listener] = []
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="job-events")

    def append(self, namespace: str, job_id: str, type_: str,
               data: dict[str, Any]) -> asyncio.Future[JobEvent]:
        """Queued now (behind every earlier append), stored when the future resolves."""
        future = asyncio.get_running_loop().run_in_executor(
            self._thread, self.log.append, namespace, job_id, type_, data)
        if self.listeners:
            future.add_done_callback(lambda done: self._tell(namespace, done))
        return future

    def _tell(self, namespace: str, done: asyncio.Future[JobEvent]) -> None:
        if done.cancelled() or done.exception() is not None:
            return
        event = done.result()
        for listener in self.listeners:
            try:
                listener(namespace, event)
            except Exception:
                log.exception("a job event listener failed")

    async def call(self, function: Any, *args: Any) -> Any:
        """Run ``function`` on the writer's thread, after the appends queued before it."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    def close(self) -> None:
        self._thread.shutdown(wait=True)
