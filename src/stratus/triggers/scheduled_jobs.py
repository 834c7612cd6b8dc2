"""Schedules that train: a schedule's job checked on creation as ``POST /api/jobs`` checks one,
and each tick submitted to the job service once, the tick kept in the job's spec."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pydantic import ValidationError

from stratus.errors import StratusError
from stratus.jobs.fold import JobState
from stratus.jobs.request import JobRequest
from stratus.jobs.service import JobService
from stratus.store.triggers import Schedule

log = logging.getLogger("stratus.triggers")
# A tick's job is submitted after the tick; it is looked for among the jobs submitted since a
# little before it, in case another server sharing the database runs a clock behind this one.
CLOCK_SKEW_S = 300.0


def job_of_tick(jobs: list[JobState], source: dict[str, Any]) -> JobState | None:
    """The job a tick already started, if any (submitted before a crash kept the tick from
    being recorded as fired)."""
    return next((job for job in jobs if job.spec.get("source") == source), None)


def stored_body(request: JobRequest) -> str:
    """The job's body as the client gave it (defaults apply at each tick), as JSON text."""
    return request.model_dump_json(by_alias=True, exclude_unset=True)


class ScheduledJobs:
    def __init__(self, jobs: JobService) -> None:
        self.jobs = jobs

    async def check(self, namespace: str, request: JobRequest) -> str:
        """The body to store; what ``POST /api/jobs`` refuses is refused here too (400, 404),
        and the code is imported now, so a schedule that cannot run is not made."""
        await self.jobs.check(namespace, request)
        return stored_body(request)

    async def fire(self, schedule: Schedule, tick: float, source: dict[str, Any]) -> None:
        """Submit the tick's job unless it was. A submission that fails (a dataset deleted
        since) loses the tick; a failure to read the log raises, and the tick is tried again."""
        where = f"schedule {schedule.namespace}/{schedule.name}: tick {source['tick']}"
        recent = await asyncio.to_thread(self.jobs.log.submitted_since, schedule.namespace,
                                         tick - CLOCK_SKEW_S)
        already = job_of_tick(recent, source)
        if already is not None:
            log.info("%s already submitted as job %s", where, already.id)
            return
        try:
            request = JobRequest.model_validate_json(schedule.job or "")
            view = await self.jobs.submit(schedule.namespace, request,
                                          f"schedule {schedule.name}", source=source)
        except (StratusError, ValidationError) as exc:
            log.warning("%s: job not submitted: %s", where, exc)
            return
        except Exception:
            log.exception("%s: job not submitted", where)
            return
        log.info("%s -> job %s", where, view["id"])
