"""The job service: submits jobs (checked, their datasets resolved, their code imported in a
zygote), runs at most ``jobs.max_running`` at once with the rest queued in order, cancels
them, and at start settles the jobs a stopped or killed server left unfinished."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select

from stratus.backends.base import Backend, CodeSpec, WorkerExit
from stratus.config import Settings
from stratus.errors import BadRequest, Conflict, NotFound, StratusError, Unavailable
from stratus.jobs.events import new_job_id
from stratus.jobs.fold import TERMINAL, JobState
from stratus.jobs.gating import evaluation_target
from stratus.jobs.log import EVENTS, JobLog
from stratus.jobs.metering import usage_record
from stratus.jobs.request import DEFAULT_PRELOAD, JobRequest, JobsConfig
from stratus.jobs.runner import JobPlan, JobRun
from stratus.jobs.writer import EventWriter
from stratus.runtime.loader import split_entrypoint
from stratus.store.blobs import NamespaceBlobs
from stratus.store.job_usage import JobUsageStore

log = logging.getLogger("stratus.jobs")

SHUTDOWN_GRACE_S = 5.0
MAX_RESUMES = 32  # how far back a resumed job looks for a checkpoint
# Told (namespace, job id, status) once a job has ended and its end is recorded.
Finished = Callable[[str, str, str], Awaitable[None]]


class DatasetResolver(Protocol):
    """The datasets service, as jobs need it: a reference -> its layout (NotFound if none)."""

    def resolve(self, namespace: str, ref: str) -> dict[str, Any]: ...

    def check_split(self, layout: dict[str, Any], split: str) -> None: ...


class ModelResolver(Protocol):
    """The model registry, as jobs need it: references -> versions laid out to load."""

    def resolve(self, namespace: str, refs: list[str]) -> list[dict[str, Any]]: ...

    def lay_out(self, resolved: list[dict[str, Any]]) -> list[dict[str, Any]]: ...


@dataclass(frozen=True, slots=True)
class _Checked:
    """What a submission resolved before anything runs."""

    code: CodeSpec
    layouts: dict[str, dict[str, Any]]
    preload: list[str]
    ancestors: list[str]
    attempt: int
    models: list[dict[str, Any]]
    evaluate: dict[str, Any] | None


def _code_key(namespace: str, request: JobRequest, preload: list[str]) -> str:
    code = {"bundle": request.code.bundle, "entrypoint": request.code.entrypoint,
            "preload": sorted(preload), "env": request.env, "kind": "job"}
    digest = hashlib.sha256(json.dumps(code, sort_keys=True).encode()).hexdigest()[:32]
    return f"{namespace}/job/{digest}"


class JobService:
    def __init__(self, settings: Settings, log: JobLog, backend: Backend,
                 blobs: NamespaceBlobs, config: JobsConfig, *,
                 usage: JobUsageStore | None = None,
                 datasets: DatasetResolver | None = None,
                 models: ModelResolver | None = None) -> None:
        self.settings = settings
        self.log = log
        self.backend = backend
        self.blobs = blobs
        self.config = config
        self.usage = usage
        self.datasets = datasets
        self.models = models
        self.writer = EventWriter(log)
        self.queue: deque[JobPlan] = deque()
        self.runs: dict[str, JobRun] = {}
        self.on_finished: list[Finished] = []
        self._idle: dict[str, asyncio.TimerHandle] = {}  # job zygotes no job uses now
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._drained: asyncio.Event | None = None  # set when the last run ends, on close

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """A job cannot outlive the server that ran it: those left queued or running by a
        server that stopped (or was killed) are failed now, before any new job runs."""
        for state in await self.writer.call(self.log.unfinished):
            await self.writer.append(state.namespace, state.id, "JobFailed", {
                "error": f"the server stopped while the job was {state.status}",
                "reason": "server_restart"})
            log.warning("job %s/%s was %s when the server stopped: marked failed",
                        state.namespace, state.id, state.status)

    async def close(self) -> None:
        """Queued and running jobs fail (``server_shutdown``); workers are killed and their
        usage recorded."""
        self._closing = True
        while self.queue:
            plan = self.queue.popleft()
            await self._shut_down(plan.namespace, plan.job_id)
        for run in list(self.runs.values()):
            run.settle("failed")
            await self._shut_down(run.plan.namespace, run.plan.job_id)
        if self.runs:  # their exits record their usage
            self._drained = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), SHUTDOWN_GRACE_S)
        for timer in self._idle.values():
            timer.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.to_thread(self.writer.close)

    async def _shut_down(self, namespace: str, job_id: str) -> None:
        with contextlib.suppress(Exception):
            await self.writer.append(namespace, job_id, "JobFailed", {
                "error": "the server shut down while the job was unfinished",
                "reason": "server_shutdown"})

    # -- commands -------------------------------------------------------------------------
    async def check(self, namespace: str, request: JobRequest) -> None:
        """Refuse now what ``submit`` would refuse, running nothing: a bad entrypoint or code
        that does not import (400), a bundle the namespace has not uploaded, an unknown dataset
        or model (404), a gate that does not parse (400). A schedule's job is checked so on
        creation."""
        checked = await self._checked(namespace, request)
        self._keep_zygote(checked.code.code_key)
        try:
            await self.backend.prepare(checked.code)
        finally:
            self._maybe_release(checked.code.code_key)

    async def submit(self, namespace: str, request: JobRequest, by: str,
                     source: dict[str, Any] | None = None) -> dict[str, Any]:
        """Queue a job; ``source`` (what started it other than a client: a schedule's tick)
        is kept in its spec."""
        checked = await self._checked(namespace, request)
        code = checked.code
        self._keep_zygote(code.code_key)
        try:
            await self.backend.prepare(code)  # imports it: a bad entrypoint is a 400 now
            return await self._enqueue(namespace, request, by, checked, source)
        finally:
            self._maybe_release(code.code_key)  # unless the job now queued uses it

    async def _checked(self, namespace: str, request: JobRequest) -> _Checked:
        if request.workers != 1:
            raise BadRequest(f"a job runs one worker for now, not workers: {request.workers}")
        if self._closing:
            raise Unavailable("the server is shutting down")
        split_entrypoint(request.code.entrypoint)  # DeployError (400) names what is wrong
        preload = list(DEFAULT_PRELOAD if request.preload is None else request.preload)
        self.settings.check_preload(preload)  # before any zygote imports it
        # 404 for a bundle of another namespace's, as for one never uploaded.
        await asyncio.to_thread(self.blobs.require, namespace, request.code.bundle,
                                "the job's code")
        try:
            bundle_dir = await asyncio.to_thread(self.blobs.artifacts.unpack_bundle,
                                                 request.code.bundle)
        except StratusError as exc:
            raise BadRequest(f"the job's code: {exc.message}") from None
        layouts = await self._resolve(namespace, request.datasets)
        evaluate = evaluation_target(request, layouts, self._check_split)
        models = await self._models(namespace, request.models)
        ancestors, attempt = await self._ancestors(namespace, request.resume_from)
        code = CodeSpec(code_key=_code_key(namespace, request, preload), bundle_dir=str(bundle_dir),
                        entrypoint=request.code.entrypoint, preload=tuple(preload),
                        env=dict(request.env), namespace=namespace, kind="job")
        return _Checked(code, layouts, preload, ancestors, attempt, models, evaluate)

    async def _enqueue(self, namespace: str, request: JobRequest, by: str, checked: _Checked,
                       source: dict[str, Any] | None) -> dict[str, Any]:
        job_id = new_job_id()
        layouts = checked.layouts
        resolved = [{"ref": ref, "name": layout.get("name"), "version": layout.get("version")}
                    for ref, layout in layouts.items()]
        spec = {**request.model_dump(mode="json", by_alias=True, exclude={"preload"}),
                "preload": checked.preload,
                "resolved_datasets": resolved, "submitted_by": by,
                "resolved_models": [f"{m['name']}@{m['version']}" for m in checked.models],
                "evaluate": checked.evaluate}
        if source is not None:
            spec["source"] = source
        await self.writer.append(namespace, job_id, "JobSubmitted", {"spec": spec})
        lineage = {"job": job_id, "experiment": request.experiment, "params": request.params,
                   "datasets": [f"{r['name']}@{r['version']}" for r in resolved]}
        self.queue.append(JobPlan(
            job_id=job_id, namespace=namespace, experiment=request.experiment, code=checked.code,
            params=dict(request.params), datasets=layouts, memory_mb=request.memory_mb,
            timeout_s=request.timeout_s, threads=request.threads, env=dict(request.env),
            log_path=self.log_path(namespace, job_id), lineage=lineage,
            attempt=checked.attempt, ancestors=checked.ancestors, models=checked.models,
            evaluate=checked.evaluate))
        self._pump()
        return await self.view(namespace, job_id)

    async def _resolve(self, namespace: str, refs: list[str]) -> dict[str, dict[str, Any]]:
        if refs and self.datasets is None:
            raise BadRequest("this server keeps no datasets")
        layouts = {}
        for ref in refs:
            assert self.datasets is not None
            layouts[ref] = await asyncio.to_thread(self.datasets.resolve, namespace, ref)
        return layouts

    def _check_split(self, layout: dict[str, Any], split: str) -> None:
        assert self.datasets is not None  # a layout came from it
        self.datasets.check_split(layout, split)

    async def _models(self, namespace: str, refs: list[str]) -> list[dict[str, Any]]:
        if not refs:
            return []
        if self.models is None:
            raise BadRequest("this server keeps no models")
        resolved = await asyncio.to_thread(self.models.resolve, namespace, refs)  # 404
        return await asyncio.to_thread(self.models.lay_out, resolved)

    async def _ancestors(self, namespace: str, parent: str | None) -> tuple[list[str], int]:
        """The chain of jobs a resumed job continues (nearest first), and so its attempt."""
        chain: list[str] = []
        while parent is not None and len(chain) < MAX_RESUMES:
            state = await self.state(namespace, parent)  # an unknown one is a 404
            chain.append(parent)
            parent = state.spec.get("resume_from")
        return chain, len(chain) + 1

    async def cancel(self, namespace: str, job_id: str, by: str) -> dict[str, Any]:
        state = await self.state(namespace, job_id)
        if state.status in TERMINAL:
            raise Conflict(f"job {job_id} has already ended ({state.status})")
        run = self.runs.get(job_id)
        if run is not None:
            run.settle("cancelled")  # first: its exit records nothing of its own
        for plan in [p for p in self.queue if p.job_id == job_id]:
            self.queue.remove(plan)
            self._maybe_release(plan.code.code_key)
        await self.writer.append(namespace, job_id, "JobCancelled", {"by": by})
        return await self.view(namespace, job_id)

    # -- queries --------------------------------------------------------------------------
    async def state(self, namespace: str, job_id: str) -> JobState:
        state = await asyncio.to_thread(self.log.job, namespace, job_id)
        if state is None:
            raise NotFound(f"job {job_id!r} not found")
        return state

    async def view(self, namespace: str, job_id: str) -> dict[str, Any]:
        return self.describe(await self.state(namespace, job_id))

    def describe(self, state: JobState) -> dict[str, Any]:
        view = state.view()
        run = self.runs.get(state.id)
        view["pid"] = run.pid if run is not None else None
        view["queue_position"] = next((i + 1 for i, p in enumerate(self.queue)
                                       if p.job_id == state.id), None)
        return view

    def referenced_digests(self) -> set[str]:
        """Blobs the jobs' history points at (code, checkpoints, models): kept by ``/api/gc``."""
        query = select(EVENTS.c.type, EVENTS.c.data).where(
            EVENTS.c.type.in_(("JobSubmitted", "CheckpointSaved", "ModelSaved")))
        found: set[str] = set()
        with self.log.engine.connect() as conn:
            for kind, text in conn.execute(query):
                data = json.loads(text)
                if kind == "JobSubmitted":
                    found.add(str((data["spec"].get("code") or {}).get("bundle")))
                elif kind == "CheckpointSaved":
                    found.add(str(data["digest"]))
                else:
                    found.update(str(f["sha256"]) for f in data["model"]["files"].values())
        return found

    def log_path(self, namespace: str, job_id: str) -> Path:
        return self.settings.log_dir / namespace / "jobs" / f"{job_id}.log"

    def active(self, job_id: str) -> bool:
        """Queued or running on this server (its log may still grow)."""
        return job_id in self.runs or any(p.job_id == job_id for p in self.queue)

    # -- running --------------------------------------------------------------------------
    def _pump(self) -> None:
        while self.queue and len(self.runs) < self.config.max_running and not self._closing:
            plan = self.queue.popleft()
            run = JobRun(plan, backend=self.backend, blobs=self.blobs,
                         writer=self.writer, max_blob_bytes=self.settings.max_blob_bytes,
                         on_end=self._ended)
            self.runs[plan.job_id] = run
            self._spawn(run.start())

    def _ended(self, run: JobRun, status: str, ending: WorkerExit | None) -> None:
        plan = run.plan
        self.runs.pop(plan.job_id, None)
        log.info("job %s/%s ended: %s", plan.namespace, plan.job_id, status)
        record = usage_record(namespace=plan.namespace, job_id=plan.job_id,
                              worker_id=run.worker_id, experiment=plan.experiment, status=status,
                              memory_mb=plan.memory_mb, started_at=run.started_at,
                              ended_at=time.time(), ending=ending)
        if record is not None and self.usage is not None:
            self._spawn(asyncio.to_thread(self.usage.write, record))
        for hook in self.on_finished:
            self._spawn(hook(plan.namespace, plan.job_id, status))
        self._maybe_release(plan.code.code_key)
        self._pump()
        if not self.runs and self._drained is not None:
            self._drained.set()

    def _spawn(self, awaitable: Awaitable[Any]) -> None:
        async def run() -> None:
            try:
                await awaitable
            except Exception:
                log.exception("a job task failed")

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- warm code ------------------------------------------------------------------------
    def _keep_zygote(self, code_key: str) -> None:
        timer = self._idle.pop(code_key, None)
        if timer is not None:
            timer.cancel()

    def _maybe_release(self, code_key: str) -> None:
        """A job's zygote stays warm a while after its last job (a rerun starts at once)."""
        in_use = any(r.plan.code.code_key == code_key for r in self.runs.values()) or any(
            p.code.code_key == code_key for p in self.queue)
        if in_use or self._closing or code_key in self._idle:
            return
        self._idle[code_key] = asyncio.get_running_loop().call_later(
            self.config.idle_zygote_s, self._release, code_key)

    def _release(self, code_key: str) -> None:
        self._idle.pop(code_key, None)
        self._spawn(self.backend.release(code_key))
