"""One run of a job: its worker forked from the job's zygote, the events the worker records
(appended in the order it made them), its calls (checkpoints, models), and how it ends."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from stratus.backends.base import Backend, CodeSpec, WorkerExit, WorkerHandle, WorkerSpec
from stratus.errors import StratusError
from stratus.jobs.frames import BadFrame, Ending, clean_event, final_event, update_metrics
from stratus.jobs.writer import EventWriter
from stratus.runtime.messages import JobCall, JobConfig, JobDone, JobEventFrame
from stratus.store.blobs import NamespaceBlobs

log = logging.getLogger("stratus.jobs")

MODEL_FORMATS = ("safetensors", "pickle")
CHUNK = 1 << 20


@dataclass
class JobPlan:
    """What one run of a job needs, from its submitted spec."""

    job_id: str
    namespace: str
    experiment: str | None
    code: CodeSpec
    params: dict[str, Any]
    datasets: dict[str, dict[str, Any]]  # ref as given -> resolved layout
    memory_mb: int | None
    timeout_s: float | None
    threads: int
    env: dict[str, str]
    log_path: Path
    attempt: int = 1
    lineage: dict[str, Any] = field(default_factory=dict)  # what a saved model records
    # The jobs whose checkpoints this one resumes from, nearest first (``resume_from``).
    ancestors: list[str] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)  # laid out for the worker
    evaluate: dict[str, Any] | None = None  # the saved model's evaluation, for a gate


def server_line(path: Path, job_id: str, message: str, **extra: Any) -> None:
    """A line the server writes into a job's log (a start that failed, with its trace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"ts": round(time.time(), 6), "job": job_id, "stream": "server", "level": "error",
             "message": message, **extra}
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, default=str) + "\n")


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(view), CHUNK):
        yield bytes(view[start:start + CHUNK])
        await asyncio.sleep(0)  # a large checkpoint does not hold the loop in one go


class JobRun:
    """A WorkerSink: the backend reports the worker's fork, messages and exit here."""

    HIGH_WATER = 2_000  # events waiting to be appended before the worker is made to wait
    LOW_WATER = 200

    def __init__(self, plan: JobPlan, *, backend: Backend, blobs: NamespaceBlobs,
                 writer: EventWriter, max_blob_bytes: int,
                 on_end: Callable[[JobRun, str, WorkerExit | None], None]) -> None:
        self.plan = plan
        self.backend = backend
        self.blobs = blobs
        self.writer = writer
        self.max_blob_bytes = max_blob_bytes
        self.on_end = on_end
        self.worker_id = f"{plan.job_id}.{plan.attempt}.0"
        self.handle: WorkerHandle | None = None
        self.pid: int | None = None
        self.started_at: float | None = None
        self.metrics: dict[str, float] = {}
        self.done: JobDone | None = None
        self.settled: str | None = None  # the status a cancel (or shutdown) already recorded
        self.timed_out: float | None = None
        self.ended = False
        self.pending = 0
        self.held = False
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- start and stop -----------------------------------------------------------------
    def _copies(self) -> list[str]:
        """The digests of the decrypted files its worker reads (datasets, models)."""
        layouts = [*self.plan.datasets.values(), *self.plan.models]
        return [entry["sha256"] for layout in layouts for entry in layout["files"].values()]

    async def start(self) -> None:
        plan = self.plan
        self.blobs.artifacts.plain.pin(self._copies())
        config = JobConfig(worker_id=self.worker_id, job_id=plan.job_id, socket_path="",
                           namespace=plan.namespace, log_path=str(plan.log_path),
                           params=plan.params, datasets=plan.datasets, memory_mb=plan.memory_mb,
                           threads=plan.threads, attempt=plan.attempt, env=plan.env,
                           models=plan.models, evaluate=plan.evaluate)
        try:
            self.handle = await self.backend.start_worker(
                WorkerSpec(self.worker_id, plan.code, config), self)
        except Exception as exc:  # its zygote or sandbox could not be made: the job fails
            message = exc.message if isinstance(exc, StratusError) else \
                f"{type(exc).__name__}: {exc}"
            detail = exc.detail if isinstance(exc, StratusError) else None
            if not isinstance(exc, StratusError):
                log.exception("job %s could not start", plan.job_id)
            await asyncio.to_thread(server_line, plan.log_path, plan.job_id,
                                    f"the job could not start: {message}",
                                    **({"exc": detail} if detail else {}))
            if self.settled is None:
                await self._finish("JobFailed", {"error": message, "reason": "start_failed"},
                                   "failed", None)
            else:
                self._ended(self.settled, None)
            return
        if self.settled is not None:  # settled while its zygote was being prepared
            self.backend.stop_worker(self.handle, self.settled)

    def settle(self, status: str) -> None:
        """Its end is recorded elsewhere (JobCancelled, or the server stopping): kill the
        worker's whole process group, and record nothing more when it exits."""
        self.settled = status
        if self.handle is not None:
            self.backend.stop_worker(self.handle, status)

    def stop(self, reason: str) -> None:
        if self.handle is not None:
            self.backend.stop_worker(self.handle, reason)

    def _time_out(self) -> None:
        self.timed_out = self.plan.timeout_s
        self.stop("timeout")

    # -- the worker's reports (WorkerSink) -------------------------------------------------
    def worker_forked(self, handle: WorkerHandle, pid: int) -> None:
        self._started(pid)

    def _started(self, pid: int) -> None:
        if self.started_at is not None:
            return
        self.pid, self.started_at = pid, time.time()
        self._append("JobStarted", {"pid": pid, "attempt": self.plan.attempt,
                                    "worker": self.worker_id})
        if self.plan.timeout_s:
            self._timer = asyncio.get_running_loop().call_later(self.plan.timeout_s,
                                                                self._time_out)

    def worker_message(self, handle: WorkerHandle,
                       message: JobEventFrame | JobCall | JobDone) -> None:
        if handle.pid is not None:
            self._started(handle.pid)  # its hello came before its zygote's FORKED
        if isinstance(message, JobEventFrame):
            try:
                data = clean_event(str(message.kind), message.data)
            except BadFrame as exc:
                log.warning("job %s sent an event that was dropped: %s", self.plan.job_id, exc)
                return
            update_metrics(self.metrics, str(message.kind), data)
            self._append(str(message.kind), data)
        elif isinstance(message, JobCall):
            self._spawn(self._answer(handle, message))
        elif isinstance(message, JobDone):
            self.done = message

    def worker_exited(self, handle: WorkerHandle, ending: WorkerExit) -> None:
        if self._timer is not None:
            self._timer.cancel()
        done = self.done
        summary = Ending(
            done_ok=None if done is None else bool(done.ok),
            done_error="" if done is None else str(done.error),
            done_reason="" if done is None else str(done.reason),
            returncode=ending.returncode, kill_reason=ending.reason,
            out_of_memory=ending.out_of_memory, settled=self.settled is not None,
            timed_out=self.timed_out, memory_mb=self.plan.memory_mb)
        event = final_event(summary, self.metrics)
        status = (self.settled or "failed") if event is None else (
            "succeeded" if event[0] == "JobCompleted" else "failed")
        self._spawn(self._end(event, status, ending))

    async def _end(self, event: tuple[str, dict[str, Any]] | None, status: str,
                   ending: WorkerExit) -> None:
        # The worker's last calls (a model saved just before it returned) finish first.
        await asyncio.gather(*[t for t in self._tasks if t is not asyncio.current_task()],
                             return_exceptions=True)
        if event is None:
            self._ended(status, ending)
        else:
            await self._finish(event[0], event[1], status, ending)

    async def _finish(self, kind: str, data: dict[str, Any], status: str,
                      ending: WorkerExit | None) -> None:
        try:
            await self.writer.append(self.plan.namespace, self.plan.job_id, kind, data)
        except Exception:
            log.exception("could not record how job %s ended", self.plan.job_id)
        self._ended(status, ending)

    def _ended(self, status: str, ending: WorkerExit | None) -> None:
        if not self.ended:
            self.ended = True
            self.blobs.artifacts.plain.unpin(self._copies())
            self.on_end(self, status, ending)

    # -- events in order ------------------------------------------------------------------
    def _append(self, kind: str, data: dict[str, Any]) -> asyncio.Future[Any]:
        future = self.writer.append(self.plan.namespace, self.plan.job_id, kind, data)
        self.pending += 1
        if self.pending >= self.HIGH_WATER and not self.held and self.handle is not None:
            self.held = True
            self.handle.hold(True)
        future.add_done_callback(self._appended)
        return future

    def _appended(self, future: asyncio.Future[Any]) -> None:
        self.pending -= 1
        if self.held and self.pending <= self.LOW_WATER and self.handle is not None:
            self.held = False
            self.handle.hold(False)
        if not future.cancelled() and future.exception() is not None:
            log.error("job %s: an event was not recorded: %s", self.plan.job_id,
                      future.exception())

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- calls ----------------------------------------------------------------------------
    async def _answer(self, handle: WorkerHandle, call: JobCall) -> None:
        try:
            payload = call.payload if isinstance(call.payload, dict) else {}
            if call.op == "checkpoint":
                answer: Any = await self._checkpoint(payload)
            elif call.op == "load_checkpoint":
                answer = await self._load_checkpoint()
            elif call.op == "model":
                answer = await self._model(payload)
            else:
                raise BadFrame(f"unknown call {call.op!r}")
        except (StratusError, BadFrame, ValueError) as exc:
            handle.reply(call.call_id, False, getattr(exc, "message", None) or str(exc))
            return
        except Exception as exc:
            log.exception("job %s: the %s call failed", self.plan.job_id, call.op)
            handle.reply(call.call_id, False, f"{type(exc).__name__}: {exc}")
            return
        handle.reply(call.call_id, True, answer)

    async def _store(self, data: Any, what: str) -> tuple[str, int]:
        if not isinstance(data, bytes):
            raise BadFrame(f"{what} must be bytes")
        digest = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
        # The job's namespace owns what it saves: it may register the model, resume from it.
        await self.blobs.keep(self.plan.namespace, digest, _chunks(data), self.max_blob_bytes)
        return digest, len(data)

    async def _checkpoint(self, payload: dict[str, Any]) -> dict[str, Any]:
        step = payload.get("step")
        if isinstance(step, bool) or not isinstance(step, int):
            raise BadFrame("a checkpoint's step must be an integer")
        digest, size = await self._store(payload.get("data"), "a checkpoint")
        await self._append("CheckpointSaved", {"step": step, "digest": digest, "size": size})
        return {"digest": digest, "size": size, "step": step}

    async def _load_checkpoint(self) -> dict[str, Any] | None:
        """This job's latest checkpoint; before it saved one, that of the job it resumes."""
        for job_id in (self.plan.job_id, *self.plan.ancestors):
            events = await asyncio.to_thread(self.writer.log.events, self.plan.namespace, job_id)
            saved = [e for e in events if e.type == "CheckpointSaved"]
            if saved:
                latest = saved[-1].data
                label = f"checkpoint of job {job_id} (step {latest['step']})"
                data = await asyncio.to_thread(self.blobs.artifacts.read_blob, str(latest["digest"]),
                                               label)
                return {"data": data, "digest": latest["digest"], "step": latest["step"],
                        "job": job_id}
        return None

    async def _model(self, payload: dict[str, Any]) -> dict[str, Any]:
        files = payload.get("files")
        kind = payload.get("format")
        if not isinstance(files, dict) or not files or len(files) > 64:
            raise BadFrame("a model is 1 to 64 files")
        if kind not in MODEL_FORMATS:
            raise BadFrame(f"a job saves models as {' or '.join(MODEL_FORMATS)}, not {kind!r}")
        for relative in files:
            path = PurePosixPath(str(relative))
            if path.is_absolute() or ".." in path.parts or str(relative).startswith("."):
                raise BadFrame(f"model file {relative!r} must be a relative path")
        described = {key: payload.get(key) for key in ("signature", "task", "framework",
                                                       "preprocessing", "meta")}
        try:
            json.dumps(described, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise BadFrame(f"a model's signature, preprocessing and meta must be JSON: {exc}") \
                from None
        stored = {}
        for relative, data in files.items():
            digest, size = await self._store(data, f"model file {relative}")
            stored[str(relative)] = {"sha256": digest, "size": size}
        meta = {**(described["meta"] or {}), **self.plan.lineage}
        model = {"files": stored, "format": kind, **described, "meta": meta}
        await self._append("ModelSaved", {"model": model})
        return model
