"""The MLflow calls that mirror one job run (experiment, run, params, metrics, artifacts, end),
made synchronously through ``mlflow.MlflowClient``; the mirror runs them on its own thread."""

from __future__ import annotations

import json
import math
import os
import posixpath
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

JOB_TAG = "stratus.job_id"
# The job statuses that end a run (stratus.jobs.fold.TERMINAL) as MLflow names them.
STATUSES = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}
MAX_PARAM_VALUE = 6000  # MLflow's limit on a parameter's value
MAX_TAG_VALUE = 5000
METRICS_PER_BATCH = 1000  # log_batch takes at most 1000 metrics ...
PARAMS_PER_BATCH = 100  # ... and 100 parameters per call


@dataclass(frozen=True)
class MetricPoint:
    name: str
    value: float
    step: int | None
    at: float


@dataclass
class RunState:
    """What the mirror knows of one job's run; ``run_id`` is None until MLflow has it."""

    job_id: str
    experiment: str
    tags: dict[str, str] = field(default_factory=dict)
    pending_params: dict[str, Any] = field(default_factory=dict)  # logged once the run opens
    run_id: str | None = None
    last_step: int = 0


def millis(at: float) -> int:
    return int(at * 1000)


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class RunWriter:
    """One MlflowClient's view of the runs it mirrors. Not thread-safe: one thread uses it."""

    def __init__(self, uri: str) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)

    # -- experiments and runs ------------------------------------------------------------
    def experiment_id(self, name: str) -> str:
        from mlflow.exceptions import RestException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            return str(found.experiment_id)
        try:
            return str(self.client.create_experiment(name))
        except RestException as exc:  # another writer created it in the meantime
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            again = self.client.get_experiment_by_name(name)
            if again is None:
                raise
            return str(again.experiment_id)

    def find_run(self, job_id: str, experiment_ids: Sequence[str] | None = None) -> str | None:
        """The run already tagged with this job (a mirror restarted mid-job finds its run)."""
        if experiment_ids is None:
            experiment_ids = [e.experiment_id for e in self.client.search_experiments()]
        if not experiment_ids:
            return None
        runs = self.client.search_runs(list(experiment_ids),
                                       filter_string=f"tags.`{JOB_TAG}` = {_quoted(job_id)}",
                                       max_results=1)
        return str(runs[0].info.run_id) if runs else None

    def open_run(self, state: RunState, at: float) -> str:
        experiment_id = self.experiment_id(state.experiment)
        run_id = self.find_run(state.job_id, [experiment_id]) or self.find_run(state.job_id)
        if run_id is None:
            run = self.client.create_run(experiment_id, start_time=millis(at),
                                         tags={**state.tags, JOB_TAG: state.job_id},
                                         run_name=state.job_id)
            run_id = str(run.info.run_id)
        state.run_id = run_id
        return run_id

    # -- what a run records ------------------------------------------------------------
    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(str(key), ("" if value is None else str(value))[:MAX_PARAM_VALUE])
                 for key, value in params.items()]
        for start in range(0, len(items), PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=items[start:start + PARAMS_PER_BATCH])

    def log_metrics(self, state: RunState, points: Sequence[MetricPoint]) -> None:
        """Points in order; one without a step lands at the run's latest step, so MLflow,
        which takes a metric's latest value by step, shows it as the last one."""
        from mlflow.entities import Metric

        assert state.run_id is not None
        metrics = []
        for point in points:
            if not math.isfinite(point.value):
                continue  # MLflow stores NaN, but a curve cannot draw it; the job never sends one
            if point.step is not None:
                state.last_step = max(state.last_step, point.step)
            step = point.step if point.step is not None else state.last_step
            metrics.append(Metric(point.name, point.value, millis(point.at), step))
        for start in range(0, len(metrics), METRICS_PER_BATCH):
            self.client.log_batch(state.run_id, metrics=metrics[start:start + METRICS_PER_BATCH])

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, v[:MAX_TAG_VALUE]) for k, v in tags.items()])

    def log_model(self, run_id: str, files: Mapping[str, Path], meta: Mapping[str, Any],
                  artifact_path: str) -> None:
        """The model's files under their own relative names (the store names them by digest),
        and what Stratus knows of the model as ``stratus-model.json`` beside them."""
        with tempfile.TemporaryDirectory(prefix="stratus-mlflow-") as staging:
            root = Path(staging)
            for relative, source in files.items():
                target = root / _safe_relative(relative)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(Path(source).resolve(strict=True), target)
            (root / "stratus-model.json").write_text(json.dumps(meta, indent=2, default=str))
            self.client.log_artifacts(run_id, staging, artifact_path=artifact_path)

    def log_dict(self, run_id: str, document: Mapping[str, Any], artifact_file: str) -> None:
        self.client.log_dict(run_id, json.loads(json.dumps(document, default=str)), artifact_file)

    def finish(self, run_id: str, status: str, at: float) -> None:
        self.client.set_terminated(run_id, status=STATUSES[status], end_time=millis(at))


def _safe_relative(relative: str) -> str:
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ValueError(f"model file {relative!r} is not a relative path inside the model")
    return posixpath.normpath(relative)
