"""The MLflow mirror against a real `mlflow server` (SQLite backend, proxied artifacts): a job's
events become a run with its params, metric curves, status and model files; a restarted
mirror finds its run; an MLflow that is down or restarts costs warnings, never a job.

The server comes from tests/.venv-mlflow (`bash tests/setup_mlflow_venv.sh`) or from
STRATUS_TEST_MLFLOW, the path of an `mlflow` executable; the client is the `mlflow` extra."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from server import free_port, wait_for

mlflow = pytest.importorskip(
    "mlflow", reason="the MLflow client is not installed: pip install -e '.[mlflow]'")

from stratus.jobs.events import JobEvent  # noqa: E402
from stratus.jobs.log import JobLog  # noqa: E402
from stratus.store.db import make_engine, migrate, sqlite_url  # noqa: E402
from stratus.tracking.mlflow import MlflowMirror  # noqa: E402

SERVER_VENV = Path(__file__).resolve().parents[1] / ".venv-mlflow"


def mlflow_executable() -> str:
    candidates = [os.environ.get("STRATUS_TEST_MLFLOW", ""), str(SERVER_VENV / "bin" / "mlflow")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.skip("no MLflow server to test against: run `bash tests/setup_mlflow_venv.sh` "
                "(it creates tests/.venv-mlflow) or set STRATUS_TEST_MLFLOW to an mlflow executable")


class MlflowServer:
    """`mlflow server` on a loopback port, restartable on the same port and database."""

    def __init__(self, executable: str, root: Path) -> None:
        self.executable = executable
        self.root = root
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - the child keeps writing it
        self.proc = subprocess.Popen(
            [self.executable, "server", "--backend-store-uri", f"sqlite:///{self.root}/mlflow.db",
             "--artifacts-destination", str(self.root / "artifacts"), "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1"],
            cwd=self.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_for(self._healthy, 180, "mlflow server /health", interval=0.25)

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"mlflow server exited:\n{self.log_tail()}")
        try:
            return httpx.get(f"{self.uri}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.proc is None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: uvicorn and its workers
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def log_tail(self) -> str:
        return "\n".join((self.root / "server.log").read_text(errors="replace").splitlines()[-30:])


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    instance = MlflowServer(mlflow_executable(), tmp_path_factory.mktemp("mlflow"))
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def client(mlflow_server: MlflowServer) -> Any:
    return mlflow.MlflowClient(tracking_uri=mlflow_server.uri)


@pytest.fixture
def job_log(tmp_path: Path) -> Iterator[JobLog]:
    engine = make_engine(sqlite_url(tmp_path))
    migrate(engine)
    yield JobLog(engine)
    engine.dispose()


def event(job_id: str, type_: str, data: dict[str, Any] | None = None, seq: int = 1) -> JobEvent:
    return JobEvent(job_id=job_id, seq=seq, type=type_, at=time.time(), data=data or {})


def runs_of(client: Any, job_id: str) -> list[Any]:
    experiments = [e.experiment_id for e in client.search_experiments()]
    return list(client.search_runs(experiments, filter_string=f"tags.`stratus.job_id` = '{job_id}'"))


def saved_model(directory: Path) -> tuple[Path, str]:
    """A real safetensors file, stored under its digest as the artifact store names blobs."""
    import torch
    from safetensors.torch import save_file

    staging = directory / "model.safetensors"
    save_file({"weight": torch.arange(6, dtype=torch.float32).reshape(2, 3)}, str(staging))
    digest = hashlib.sha256(staging.read_bytes()).hexdigest()
    blob = directory / digest
    staging.rename(blob)
    return blob, digest


def test_a_job_becomes_a_run(mlflow_server: MlflowServer, client: Any, job_log: JobLog,
                             tmp_path: Path) -> None:
    blob, digest = saved_model(tmp_path)
    job = "job-mirror-1"
    history: list[tuple[str, dict[str, Any]]] = [
        ("JobSubmitted", {"spec": {"experiment": "iris-mirror",
                                   "params": {"lr": 0.01, "epochs": 3}}}),
        ("JobStarted", {"pid": 1234, "attempt": 1}),
        ("ParamsLogged", {"params": {"hidden": 16, "optimizer": "adam"}}),
        *[("EpochCompleted", {"epoch": e, "loss": 1.0 / e, "metrics": {"acc": 0.3 * e}})
          for e in (1, 2, 3)],
        ("MetricLogged", {"name": "val_loss", "value": 0.42, "step": None}),
        ("CheckpointSaved", {"step": 3, "digest": "ab" * 32, "size": 10}),
        ("ModelSaved", {"model": {
            "files": {"model.safetensors": {"sha256": digest, "size": blob.stat().st_size,
                                            "path": str(blob)}},
            "format": "safetensors", "framework": "torch", "task": "classification",
            "signature": {"inputs": [{"name": "x", "shape": [-1, 3]}]},
            "preprocessing": {"x": {"mean": 1.0, "std": 2.0}}}}),
        ("EvaluationCompleted", {"metrics": {"accuracy": 0.93, "f1_macro": 0.9,
                                             "per_class": {"a": {"f1": 0.9}}}, "split": "test"}),
        ("GateJudged", {"passed": True, "checks": [{"gate": "accuracy>=0.9", "passed": True}]}),
        ("JobCompleted", {"metrics": {"accuracy": 0.93}, "model_version": None}),
        ("ModelRegistered", {"name": "iris", "version": "1.0.0"}),
    ]
    mirror = MlflowMirror(mlflow_server.uri)
    try:
        for type_, data in history:  # as the server will: each event the log appends
            mirror.apply(job_log.append("team-a", job, type_, data), namespace="team-a")
        assert mirror.flush(60)
    finally:
        mirror.close()
    assert mirror.failures == 0 and mirror.dropped == 0

    [run] = runs_of(client, job)
    experiment = client.get_experiment_by_name("iris-mirror")
    assert run.info.experiment_id == experiment.experiment_id
    assert run.info.status == "FINISHED"
    assert run.info.run_name == job
    assert run.data.params == {"lr": "0.01", "epochs": "3", "hidden": "16", "optimizer": "adam"}
    tags = run.data.tags
    assert tags["stratus.namespace"] == "team-a"
    assert tags["stratus.attempt"] == "1"
    assert tags["stratus.model_version"] == "1.0.0"
    assert tags["stratus.checkpoint"] == "ab" * 32
    # Every curve as Stratus's own projection has it (a point without a step at its seq).
    curves = job_log.curves("team-a", job)
    assert set(curves) == {"loss", "acc", "val_loss"}
    for name, points in curves.items():
        mirrored = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id,
                                                                               name))
        assert mirrored == [(step, pytest.approx(value)) for step, value in points]
    assert curves["val_loss"] == [(7, 0.42)]
    assert run.data.metrics["accuracy"] == 0.93 and run.data.metrics["f1_macro"] == 0.9
    assert "per_class" not in run.data.metrics
    assert tags["stratus.gate"] == "passed"
    assert tags["stratus.model"] == "iris@1.0.0"

    top = sorted(f.path for f in client.list_artifacts(run.info.run_id))
    assert top == ["evaluation.json", "gate.json", "model"]
    evaluation = json.loads(Path(client.download_artifacts(
        run.info.run_id, "evaluation.json", str(tmp_path / "eval"))).read_text())
    assert evaluation["split"] == "test" and evaluation["metrics"]["per_class"]["a"]["f1"] == 0.9
    names = sorted(f.path for f in client.list_artifacts(run.info.run_id, "model"))
    assert names == ["model/model.safetensors", "model/stratus-model.json"]
    local = Path(client.download_artifacts(run.info.run_id, "model", str(tmp_path / "down")))
    assert (local / "model.safetensors").read_bytes() == blob.read_bytes()
    meta = json.loads((local / "stratus-model.json").read_text())
    assert meta["task"] == "classification" and meta["framework"] == "torch"
    assert meta["files"] == {"model.safetensors": {"sha256": digest,
                                                   "size": blob.stat().st_size}}


def test_failed_and_cancelled_jobs(mlflow_server: MlflowServer, client: Any) -> None:
    mirror = MlflowMirror(mlflow_server.uri)
    try:
        for job in ("job-mirror-fail", "job-mirror-cancel"):
            mirror.apply(event(job, "JobSubmitted", {"spec": {"experiment": "iris-mirror"}}))
        mirror.apply(event("job-mirror-fail", "JobFailed",
                           {"error": "Traceback ...\nValueError: boom", "reason": "error"}, 2))
        mirror.apply(event("job-mirror-cancel", "JobCancelled", {"by": "alice"}, 2))
        assert mirror.flush(60)
    finally:
        mirror.close()
    [failed] = runs_of(client, "job-mirror-fail")
    assert failed.info.status == "FAILED"
    assert failed.data.tags["stratus.failure"] == "error"
    assert failed.data.tags["stratus.error"].endswith("ValueError: boom")
    [cancelled] = runs_of(client, "job-mirror-cancel")
    assert cancelled.info.status == "KILLED"
    assert cancelled.data.tags["stratus.cancelled_by"] == "alice"


def test_a_restarted_mirror_finds_the_run(mlflow_server: MlflowServer, client: Any) -> None:
    job = "job-mirror-restart"
    first = MlflowMirror(mlflow_server.uri)
    first.start(job, experiment="restarts", params={"lr": 0.1})
    first.log_metric(job, "loss", 0.9, step=1)
    assert first.flush(60)
    first.close()
    second = MlflowMirror(mlflow_server.uri)  # the server restarted: it knows nothing of the job
    second.log_metric(job, "loss", 0.5, step=2)
    second.finish(job, "succeeded", {"accuracy": 0.8})
    assert second.flush(60)
    second.close()
    [run] = runs_of(client, job)
    assert run.info.status == "FINISHED"
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")] == \
        [(1, 0.9), (2, 0.5)]
    assert run.data.metrics["accuracy"] == 0.8


def test_many_metrics_go_up_in_batches(mlflow_server: MlflowServer, client: Any) -> None:
    job = "job-mirror-many"
    mirror = MlflowMirror(mlflow_server.uri)
    mirror.start(job, experiment="batches")
    for step in range(2500):
        mirror.log_metric(job, "loss", 1.0 / (step + 1), step=step)
    assert mirror.flush(120)
    mirror.close()
    [run] = runs_of(client, job)
    history = client.get_metric_history(run.info.run_id, "loss")
    assert sorted(m.step for m in history) == list(range(2500))


def test_bad_input_is_refused_at_the_call() -> None:
    mirror = MlflowMirror(f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(ValueError, match="status 'done'"):
            mirror.finish("job-x", "done")
    finally:
        mirror.close()


def test_mlflow_down_costs_warnings_not_jobs(caplog: pytest.LogCaptureFixture) -> None:
    mirror = MlflowMirror(f"http://127.0.0.1:{free_port()}", pause_s=60)
    caplog.set_level(logging.WARNING, logger="stratus.tracking.mlflow")
    try:
        started = time.monotonic()
        mirror.start("job-down", experiment="down", params={"lr": 0.1})
        for step in range(500):
            mirror.log_metric("job-down", "loss", 0.5, step)
        mirror.finish("job-down", "succeeded", {"accuracy": 1.0})
        calls_took = time.monotonic() - started
        assert mirror.flush(60)
    finally:
        mirror.close()
    assert calls_took < 1.0  # the callers never waited for MLflow
    assert mirror.failures == 1  # one failed attempt, then paused: the rest were skipped
    assert mirror.dropped >= 2
    warnings = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1 and "job-down" in warnings[0]


def test_mlflow_that_comes_back_gets_the_run(mlflow_server: MlflowServer, client: Any) -> None:
    """Runs last: it stops the module's server and starts it again on the same port."""
    job = "job-mirror-outage"
    mirror = MlflowMirror(mlflow_server.uri, pause_s=0.5)
    try:
        mlflow_server.stop()
        mirror.start(job, experiment="outage", params={"lr": 0.2})
        assert mirror.flush(60)
        assert mirror.failures == 1
        mlflow_server.start()
        time.sleep(0.6)  # past the pause
        mirror.log_metric(job, "loss", 0.25, step=4)
        mirror.finish(job, "succeeded")
        assert mirror.flush(60)
    finally:
        mirror.close()
    [run] = runs_of(client, job)
    assert client.get_experiment(run.info.experiment_id).name == "outage"
    assert run.data.params == {"lr": "0.2"}  # kept while MLflow was away
    assert run.data.metrics == {"loss": 0.25}
    assert run.info.status == "FINISHED"



def test_a_server_with_tracking_mirrors_its_jobs(mlflow_server: MlflowServer, client: Any,
                                                 tmp_path: Path) -> None:
    """``tracking: {mlflow_uri}`` in the server's config: a real job's params, epoch losses,
    final status and saved model files reach MLflow."""
    from server import TEST_ENV, StratusServer

    (tmp_path / "stratus.yaml").write_text(f"tracking:\n  mlflow_uri: {mlflow_server.uri}\n")
    stratus = StratusServer(tmp_path, TEST_ENV)
    stratus.start()
    try:
        digest = stratus.upload("jobs")
        response = stratus.http.post("/api/jobs", json={
            "code": {"bundle": digest, "entrypoint": "train.py:train_mlp"},
            "params": {"epochs": 3, "lr": 0.05, "hidden": 8}, "experiment": "served-mirror"})
        assert response.status_code == 201, response.text
        job_id = response.json()["id"]
        wait_for(lambda: stratus.http.get(f"/api/jobs/{job_id}").json()["status"] == "succeeded",
                 120, "the job to succeed")

        def mirrored() -> Any:
            runs = runs_of(client, job_id)
            return runs and runs[0].info.status == "FINISHED" and runs[0]
        run = wait_for(mirrored, 60, "the run to be mirrored and finished", interval=0.25)
        assert run.data.params["hidden"] == "8"
        losses = client.get_metric_history(run.info.run_id, "loss")
        assert sorted(m.step for m in losses) == [1, 2, 3]
        names = sorted(f.path for f in client.list_artifacts(run.info.run_id, "model"))
        assert "model/model.safetensors" in names, names
    finally:
        stratus.stop()
