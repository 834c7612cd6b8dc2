"""Mirrors job runs to an MLflow tracking server: a run per job in an experiment by name, with
its params, metrics by step, final status and model files. Calls return at once; one thread
makes the MLflow requests, and a server that is down costs warnings, never a job."""

from __future__ import annotations

import importlib.util
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from stratus.tracking.mlflow_runs import STATUSES, MetricPoint, RunState, RunWriter

log = logging.getLogger("stratus.tracking.mlflow")
DEFAULT_EXPERIMENT = "Default"  # the experiment every MLflow server starts with
QUEUE_LIMIT = 100_000  # queued calls past this are dropped (counted, warned) rather than kept


class JobEventLike(Protocol):
    """The fields of a job event (stratus.jobs.events.JobEvent) the mirror reads."""

    @property
    def job_id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def at(self) -> float: ...
    @property
    def seq(self) -> int: ...
    @property
    def data(self) -> dict[str, Any]: ...


def missing_client_error() -> RuntimeError | None:
    """Why the MLflow client cannot be used here, or None when it can."""
    # Found, not imported: the import takes a second or two, and happens on the mirror's thread.
    if importlib.util.find_spec("mlflow") is None:
        return RuntimeError("tracking.mlflow_uri is set but the MLflow client is not installed: "
                            "pip install 'stratus[mlflow]'")
    return None


@dataclass(frozen=True)
class _Call:
    job_id: str
    kind: str  # start | params | metric | tags | model | document | finish
    at: float
    payload: Any = None


@dataclass(frozen=True)
class _Flush:
    done: threading.Event


Locate = Callable[[str, int | None, str], "str | Path"]


def mirror_uri(section: Mapping[str, Any]) -> str | None:
    """The config file's ``tracking: {mlflow_uri: ...}``; ValueError names what is wrong."""
    unknown = sorted(set(section) - {"mlflow_uri"})
    if unknown:
        raise ValueError(f"tracking: unknown keys {unknown}; known: mlflow_uri")
    uri = section.get("mlflow_uri")
    if uri is None:
        return None
    if not isinstance(uri, str) or not uri.startswith(("http://", "https://", "file:", "sqlite:")):
        raise ValueError(f"tracking.mlflow_uri must be an http(s), file: or sqlite: URI, not "
                         f"{uri!r}")
    problem = missing_client_error()
    if problem is not None:
        raise ValueError(f"tracking.mlflow_uri is set but {problem}")
    return uri


class MlflowMirror:
    """``MlflowMirror("http://mlflow:5000")``. Every method only queues; ``flush`` waits for
    the queue to drain and ``close`` stops the thread."""

    def __init__(self, uri: str, *, request_timeout_s: int = 10, retries: int = 1,
                 pause_s: float = 30.0, locate: Locate | None = None) -> None:
        problem = missing_client_error()
        if problem is not None:
            raise problem
        self.uri = uri
        # A model file's plaintext path from its (sha256, size), for files recorded without
        # one (a job's ModelSaved): called on the mirror's thread, since it may decrypt.
        self.locate = locate
        self.pause_s = pause_s  # after a connection failure, calls are skipped this long
        # MLflow reads these per request; its defaults (120 s, 7 retries with backoff) would
        # hold the mirror's thread for minutes on every call while the server is down.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(request_timeout_s))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(retries))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        self._queue: queue.Queue[_Call | _Flush | None] = queue.Queue(QUEUE_LIMIT)
        self._runs: dict[str, RunState] = {}  # owned by the thread
        self._writer: RunWriter | None = None
        self._down_until = 0.0
        self._curves: dict[str, set[str]] = {}  # per running job, the metrics mirrored
        self.dropped = 0  # calls not made: queue full, or MLflow down
        self.failures = 0
        self._thread = threading.Thread(target=self._work, name="mlflow-mirror", daemon=True)
        self._thread.start()

    # -- what the jobs side calls (any thread, never blocks) ---------------------------
    def start(self, job_id: str, *, experiment: str | None, params: Mapping[str, Any] | None = None,
              tags: Mapping[str, str] | None = None, at: float | None = None) -> None:
        self._put(_Call(job_id, "start", at or time.time(),
                        (experiment or DEFAULT_EXPERIMENT, dict(params or {}), dict(tags or {}))))

    def log_params(self, job_id: str, params: Mapping[str, Any], at: float | None = None) -> None:
        if params:
            self._put(_Call(job_id, "params", at or time.time(), dict(params)))

    def log_metric(self, job_id: str, name: str, value: float, step: int | None = None,
                   at: float | None = None) -> None:
        at = at or time.time()
        self._curves.setdefault(job_id, set()).add(name)
        self._put(_Call(job_id, "metric", at, MetricPoint(name, float(value), step, at)))

    def set_tags(self, job_id: str, tags: Mapping[str, str], at: float | None = None) -> None:
        self._put(_Call(job_id, "tags", at or time.time(), {k: str(v) for k, v in tags.items()}))

    def log_model(self, job_id: str, files: Mapping[str, str | Path | tuple[str, int]],
                  meta: Mapping[str, Any] | None = None, artifact_path: str = "model",
                  at: float | None = None) -> None:
        """``files``: the model's relative names -> local plaintext paths, or (sha256, size)
        of a stored blob that ``locate`` finds."""
        payload = ({name: path if isinstance(path, tuple) else Path(path)
                    for name, path in files.items()}, dict(meta or {}), artifact_path)
        self._put(_Call(job_id, "model", at or time.time(), payload))

    def log_document(self, job_id: str, document: Mapping[str, Any], artifact_file: str,
                     at: float | None = None) -> None:
        """A JSON artifact of the run (e.g. ``evaluation.json``)."""
        self._put(_Call(job_id, "document", at or time.time(), (dict(document), artifact_file)))

    def finish(self, job_id: str, status: str, metrics: Mapping[str, Any] | None = None,
               at: float | None = None) -> None:
        """``status``: succeeded, failed or cancelled; ``metrics``: the run's final values
        (those that are numbers)."""
        if status not in STATUSES:
            raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
        at = at or time.time()
        self._log_scalars(job_id, metrics, at)
        self._curves.pop(job_id, None)
        self._put(_Call(job_id, "finish", at, status))

    def _log_scalars(self, job_id: str, metrics: Mapping[str, Any] | None, at: float) -> None:
        for name, value in (metrics or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.log_metric(job_id, name, value, None, at)

    def apply(self, event: JobEventLike, namespace: str | None = None) -> None:
        """Mirror one event of the job log (the event types of stratus.jobs.events)."""
        data, job_id, at = event.data, event.job_id, event.at
        if event.type == "JobSubmitted":
            spec = data.get("spec") or {}
            tags = {"stratus.namespace": namespace} if namespace else {}
            self.start(job_id, experiment=spec.get("experiment"), params=spec.get("params"),
                       tags=tags, at=at)
        elif event.type == "JobStarted":
            self.set_tags(job_id, {"stratus.attempt": str(data.get("attempt", 1))}, at)
        elif event.type == "ParamsLogged":
            self.log_params(job_id, data.get("params") or {}, at)
        elif event.type == "MetricLogged":
            # Without a step, the event's sequence number: where Stratus's own curve puts it.
            step = data.get("step")
            self.log_metric(job_id, data["name"], data["value"],
                            event.seq if step is None else step, at)
        elif event.type == "EpochCompleted":
            epoch = data.get("epoch")
            self.log_metric(job_id, "loss", data["loss"], epoch, at)
            for name, value in (data.get("metrics") or {}).items():
                self.log_metric(job_id, name, value, epoch, at)
        elif event.type == "CheckpointSaved":
            self.set_tags(job_id, {"stratus.checkpoint": str(data.get("digest"))}, at)
        elif event.type == "ModelSaved":
            self._apply_model(job_id, data.get("model") or {}, at)
        elif event.type == "EvaluationCompleted":
            self._log_scalars(job_id, data.get("metrics"), at)
            self.log_document(job_id, data, "evaluation.json", at)
        elif event.type == "GateJudged":
            self.set_tags(job_id, {"stratus.gate": "passed" if data.get("passed") else "failed"},
                          at)
            self.log_document(job_id, data, "gate.json", at)
        elif event.type == "ModelRegistered":
            self.set_tags(job_id, {"stratus.model_version": str(data.get("version")),
                                   "stratus.model": f"{data.get('name')}@{data.get('version')}"},
                          at)
        elif event.type == "RolloutStarted":
            self.set_tags(job_id, {"stratus.deployment": str(data.get("deployment"))}, at)
        elif event.type == "JobCompleted":
            if data.get("model_version"):
                self.set_tags(job_id, {"stratus.model_version": str(data["model_version"])}, at)
            # The final values of metrics already on a curve are its last points: not again.
            seen = self._curves.get(job_id, set())
            final = {k: v for k, v in (data.get("metrics") or {}).items() if k not in seen}
            self.finish(job_id, "succeeded", final, at)
        elif event.type == "JobFailed":
            self.set_tags(job_id, {"stratus.failure": str(data.get("reason") or ""),
                                   "stratus.error": str(data.get("error") or "")}, at)
            self.finish(job_id, "failed", None, at)
        elif event.type == "JobCancelled":
            self.set_tags(job_id, {"stratus.cancelled_by": str(data.get("by") or "")}, at)
            self.finish(job_id, "cancelled", None, at)

    def _apply_model(self, job_id: str, model: Mapping[str, Any], at: float) -> None:
        # Files carry a local "path" when the caller laid them out (as layouts do); the rest
        # of the record goes up as stratus-model.json.
        files = model.get("files") or {}
        paths: dict[str, Any] = {}
        for name, entry in files.items():
            if isinstance(entry, Mapping) and entry.get("path"):
                paths[name] = entry["path"]
            elif isinstance(entry, Mapping) and self.locate is not None and entry.get("sha256"):
                paths[name] = (str(entry["sha256"]), int(entry.get("size") or 0))
        meta = {key: value for key, value in model.items() if key != "files"}
        meta["files"] = {name: {k: v for k, v in entry.items() if k != "path"}
                         if isinstance(entry, Mapping) else entry for name, entry in files.items()}
        self.log_model(job_id, paths, meta, at=at)

    def _located(self, name: str, where: Path | tuple[str, int]) -> Path:
        if not isinstance(where, tuple):
            return where
        assert self.locate is not None  # only then are blobs recorded
        return Path(self.locate(where[0], where[1], f"model file {name}"))

    # -- the thread ------------------------------------------------------------------------
    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued so far has been sent (or given up on)."""
        marker = _Flush(threading.Event())
        self._queue.put(marker, timeout=timeout)
        return marker.done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued (within ``timeout``), then stop the thread."""
        if self._thread.is_alive():
            try:
                self._queue.put(None, timeout=timeout)
            except queue.Full:
                log.warning("mlflow mirror: closing with %d calls unsent", self._queue.qsize())
                return
            self._thread.join(timeout)

    def _put(self, call: _Call) -> None:
        try:
            self._queue.put_nowait(call)
        except queue.Full:
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.warning("mlflow mirror: queue full, %d calls dropped so far", self.dropped)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, _Flush):
                item.done.set()
                continue
            batch = [item]
            if item.kind == "metric":  # consecutive points of one job go up in one request
                batch += self._more_metrics(item.job_id)
            self._run(batch)

    def _more_metrics(self, job_id: str) -> list[_Call]:
        more: list[_Call] = []
        while len(more) < 999:
            with self._queue.mutex:  # only this thread takes items out: the peek stays true
                peek = self._queue.queue[0] if self._queue.queue else None
            if not (isinstance(peek, _Call) and peek.kind == "metric" and peek.job_id == job_id):
                break
            taken = self._queue.get_nowait()
            assert isinstance(taken, _Call)
            more.append(taken)
        return more

    def _run(self, batch: list[_Call]) -> None:
        first = batch[0]
        if first.kind == "start":  # kept even if MLflow is down: a later call opens the run
            state = self._state(first)
            state.experiment, state.pending_params, state.tags = first.payload
        if time.monotonic() < self._down_until:
            self.dropped += len(batch)
            if first.kind == "finish":
                self._runs.pop(first.job_id, None)
            return
        try:
            self._do(batch)
        except Exception as exc:  # any failure of MLflow's is logged, never raised to a job
            self.failures += 1
            self._note_failure(first, exc)
        finally:
            if first.kind == "finish":
                self._runs.pop(first.job_id, None)

    def _note_failure(self, call: _Call, exc: Exception) -> None:
        from mlflow.exceptions import RestException

        if isinstance(exc, RestException):  # MLflow answered: this call was refused
            log.warning("mlflow mirror: %s for job %s refused by %s: %s", call.kind,
                        call.job_id, self.uri, exc)
            return
        self._down_until = time.monotonic() + self.pause_s
        log.warning("mlflow mirror: %s unreachable (%s: %s); job %s's %s not mirrored, and "
                    "calls are skipped for %.0f s", self.uri, type(exc).__name__,
                    str(exc)[:300], call.job_id, call.kind, self.pause_s)

    def _state(self, call: _Call) -> RunState:
        state = self._runs.get(call.job_id)
        if state is None:
            state = self._runs[call.job_id] = RunState(call.job_id, DEFAULT_EXPERIMENT)
        return state

    def _do(self, batch: list[_Call]) -> None:
        if self._writer is None:
            self._writer = RunWriter(self.uri)
        writer, call = self._writer, batch[0]
        state = self._state(call)
        run_id = self._run_id(state, call)
        if call.kind == "params":
            writer.log_params(run_id, call.payload)
        elif call.kind == "metric":
            writer.log_metrics(state, [c.payload for c in batch])
        elif call.kind == "tags":
            writer.set_tags(run_id, call.payload)
        elif call.kind == "model":
            files, meta, artifact_path = call.payload
            located = {name: self._located(name, where) for name, where in files.items()}
            writer.log_model(run_id, located, meta, artifact_path)
        elif call.kind == "document":
            document, artifact_file = call.payload
            writer.log_dict(run_id, document, artifact_file)
        elif call.kind == "finish":
            writer.finish(run_id, call.payload, call.at)

    def _run_id(self, state: RunState, call: _Call) -> str:
        """The job's run, opened now if its start was missed (a mirror that came up, or an
        MLflow that came back, in the middle of the job)."""
        assert self._writer is not None
        if state.run_id is None:
            self._writer.open_run(state, call.at)
        assert state.run_id is not None
        if state.pending_params:
            self._writer.log_params(state.run_id, state.pending_params)
            state.pending_params = {}
        return state.run_id
