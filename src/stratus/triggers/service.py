"""The triggers together, as the server starts and stops them and the routes reach them."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from sqlalchemy import Engine

from stratus.jobs.service import JobService
from stratus.store.triggers import TriggerStore
from stratus.triggers.scheduled_jobs import ScheduledJobs
from stratus.triggers.schedules import Schedules
from stratus.triggers.sources import Sources
from stratus.triggers.submitter import DeploymentCheck, Submitter
from stratus.triggers.topics import Topics


class Triggers:
    """Schedules, topics and sources over one store. ``check`` raises NotFound for a
    deployment a namespace does not have (the controller's ``get_unit``); ``jobs``, when the
    server runs them, is what a schedule's ticks may submit instead of invocations."""

    def __init__(self, engine: Engine, submitter: Submitter, check: DeploymentCheck,
                 clock: Callable[[], float] = time.time, *,
                 jobs: JobService | None = None) -> None:
        self.store = store = TriggerStore(engine)
        scheduled = ScheduledJobs(jobs) if jobs is not None else None
        self.schedules = Schedules(store, submitter, check, clock, scheduled)
        self.topics = Topics(store, submitter, check, clock)
        self.sources = Sources(store, submitter, check, clock)

    def referenced_digests(self) -> set[str]:
        """The code bundles of the job schedules: kept by ``/api/gc`` for their next ticks."""
        found: set[str] = set()
        for body in self.store.job_bodies():
            code = json.loads(body).get("code") or {}
            if isinstance(code.get("bundle"), str):
                found.add(code["bundle"])
        return found

    async def start(self) -> None:
        await self.schedules.start()
        await self.sources.start()

    async def close(self) -> None:
        await self.sources.close()
        await self.schedules.close()
