"""Cron schedules: their rules on creation, and the runner that sleeps until the next tick of
any schedule, submits one async invocation (keyed so a tick never runs twice) or one training
job per tick, and records the last tick fired. Ticks missed while the server was down go by the
catch-up policy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from stratus.errors import BadRequest, StratusError, Unavailable
from stratus.jobs.request import JobRequest
from stratus.store.triggers import JOB, Schedule, TriggerStore
from stratus.triggers.cron import CatchUp, Cron, plan
from stratus.triggers.names import check_name
from stratus.triggers.scheduled_jobs import ScheduledJobs
from stratus.triggers.submitter import DeploymentCheck, Submitter

log = logging.getLogger("stratus.triggers")
MAX_SLEEP_S = 30.0  # wake at least this often: the wall clock may have been set
RETRY_S = 1.0  # after a failed round (the database was busy, say)


def tick_key(schedule: str, tick: float) -> str:
    """The idempotency key of one tick: submitted twice (a crash before it was recorded),
    it is still one invocation."""
    return f"schedule:{schedule}:{int(tick)}"


class Schedules:
    def __init__(self, store: TriggerStore, submitter: Submitter, check: DeploymentCheck,
                 clock: Callable[[], float] = time.time,
                 jobs: ScheduledJobs | None = None) -> None:
        self.store = store
        self.submitter = submitter
        self.check = check
        self.clock = clock
        self.jobs = jobs
        self.online_since = clock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- the API's side ---------------------------------------------------------------
    async def create(self, namespace: str, name: str, cron: str, timezone: str,
                     catch_up: str, *, deployment: str | None = None, payload: Any = None,
                     job: JobRequest | None = None) -> dict[str, Any]:
        """Each tick invokes ``deployment`` with ``payload``, or submits ``job``."""
        check_name("schedule", name)
        parsed = Cron.parse(cron, timezone)
        try:
            policy = CatchUp(catch_up)
        except ValueError:
            raise BadRequest(f"catch_up is one of {', '.join(p.value for p in CatchUp)}, "
                             f"not {catch_up!r}") from None
        if (deployment is None) == (job is None):
            raise BadRequest("a schedule either invokes a deployment (deployment, payload) or "
                             "submits a job (job): give exactly one of deployment and job")
        body: str | None = None
        if job is not None:
            if self.jobs is None:
                raise Unavailable("this server runs no jobs")
            body = await self.jobs.check(namespace, job)  # 400, 404 as POST /api/jobs
        else:
            assert deployment is not None
            self.check(namespace, deployment)  # NotFound (404)
        created = await asyncio.to_thread(
            self.store.add_schedule, namespace, name, cron, timezone, deployment,
            None if job is not None else json.dumps(payload), policy.value, self.clock(),
            job=body)
        self._wake.set()
        return self.view(created, parsed)

    async def ls(self, namespace: str) -> list[dict[str, Any]]:
        found = await asyncio.to_thread(self.store.schedules, namespace)
        return [self.view(schedule) for schedule in found]

    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        return self.view(await asyncio.to_thread(self.store.schedule, namespace, name))

    async def delete(self, namespace: str, name: str) -> None:
        await asyncio.to_thread(self.store.delete_schedule, namespace, name)
        self._wake.set()

    def view(self, schedule: Schedule, cron: Cron | None = None) -> dict[str, Any]:
        body = schedule.view()
        body["payload"] = None if schedule.payload is None else json.loads(schedule.payload)
        body["job"] = None if schedule.job is None else json.loads(schedule.job)
        cron = cron or Cron.parse(schedule.cron, schedule.timezone)
        since = schedule.last_fired if schedule.last_fired is not None else schedule.created_at
        body["next_fire"] = _iso(cron.after(max(since, self.clock())))
        if schedule.last_fired is not None:
            body["last_fired_at"] = _iso(schedule.last_fired)
        return body

    # -- the runner -------------------------------------------------------------------
    async def start(self) -> None:
        self.online_since = self.clock()  # ticks before this one were missed while down
        self._task = asyncio.create_task(self._run(), name="schedules")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            self._wake.clear()  # before the round: a schedule made during it wakes the next
            try:
                wake_at = await self.run_due()
            except Exception:
                log.exception("schedules: a round failed; trying again")
                wake_at = self.clock() + RETRY_S
            delay = min(max(0.0, wake_at - self.clock()), MAX_SLEEP_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def run_due(self) -> float:
        """Fire every schedule's due ticks; the time of the next one of any schedule."""
        now = self.clock()
        schedules = await asyncio.to_thread(self.store.schedules)
        # Each schedule's ticks in order, the schedules side by side: a job's submission (its
        # code imported in a zygote) holds no other schedule up.
        nexts = await asyncio.gather(*(self._run_one(schedule, now) for schedule in schedules),
                                     return_exceptions=True)
        wake_at = now + MAX_SLEEP_S
        for schedule, found in zip(schedules, nexts, strict=True):
            if isinstance(found, BaseException):
                if not isinstance(found, Exception):
                    raise found  # cancelled: the runner is closing
                log.error("schedule %s/%s: a round failed; trying again", schedule.namespace,
                          schedule.name, exc_info=found)
                found = now + RETRY_S
            wake_at = min(wake_at, found)
        return wake_at

    async def _run_one(self, schedule: Schedule, now: float) -> float:
        """Fire one schedule's due ticks and record them; when its next tick comes."""
        try:
            cron = Cron.parse(schedule.cron, schedule.timezone)
        except BadRequest as exc:  # its time zone left the tz database, say
            log.warning("schedule %s/%s cannot run: %s", schedule.namespace, schedule.name, exc)
            return now + MAX_SLEEP_S
        since = schedule.last_fired if schedule.last_fired is not None else schedule.created_at
        due = plan(cron, since, now, self.online_since, CatchUp(schedule.catch_up))
        for tick in due.fire:
            await self._fire(schedule, tick)
        if due.fired_through is not None:
            await asyncio.to_thread(self.store.fired, schedule.id, due.fired_through)
        return due.next_at

    async def _fire(self, schedule: Schedule, tick: float) -> None:
        source = {"kind": "schedule", "schedule": schedule.name, "tick": _iso(tick)}
        if schedule.target == JOB:
            if self.jobs is None:
                log.warning("schedule %s/%s: tick %s lost: this server runs no jobs",
                            schedule.namespace, schedule.name, source["tick"])
                return
            await self.jobs.fire(schedule, tick, source)
            return
        assert schedule.deployment is not None and schedule.payload is not None
        try:
            record, created = await self.submitter.submit(
                schedule.namespace, schedule.deployment, schedule.payload.encode(),
                source=source, idempotency_key=tick_key(schedule.name, tick))
        except StratusError as exc:  # its deployment was deleted, say: this tick is lost
            log.warning("schedule %s/%s: tick %s not submitted: %s", schedule.namespace,
                        schedule.name, source["tick"], exc)
            return
        log.info("schedule %s/%s: tick %s -> invocation %s%s", schedule.namespace,
                 schedule.name, source["tick"], record.id, "" if created else " (already)")


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")
