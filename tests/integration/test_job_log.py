"""The jobs' event log on SQLite and PostgreSQL: projections rebuilt from the log equal the live
ones, replay gives the state at a moment, namespaces stay apart, bad events are refused."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from test_store import _postgres_database

from stratus.errors import BadRequest
from stratus.jobs.events import new_job_id
from stratus.jobs.log import JobLog
from stratus.store.db import make_engine, migrate, sqlite_url

NS = "team-a"
T0 = 1_800_000_000.0


@pytest.fixture(params=["sqlite", "postgres"])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobLog]:
    urls: Iterator[str] = (iter([sqlite_url(tmp_path)]) if request.param == "sqlite"
                           else _postgres_database())
    engine: Engine = make_engine(next(urls))
    migrate(engine)
    yield JobLog(engine)
    engine.dispose()
    for _ in urls:  # drops the PostgreSQL database
        pass


def _history(log: JobLog, rng: random.Random, namespace: str, at: float) -> str:
    """A job's plausible life: submitted, started, epochs with metrics, checkpoints, then one of
    the endings (or none: still running)."""
    job = new_job_id()
    epochs = rng.randint(1, 8)
    log.append(namespace, job, "JobSubmitted",
               {"spec": {"experiment": rng.choice(["iris", "mnist", None]),
                         "params": {"lr": rng.random(), "epochs": epochs}}}, at=at)
    log.append(namespace, job, "JobStarted", {"attempt": 1, "pid": 4242}, at=at + 0.1)
    log.append(namespace, job, "ParamsLogged", {"params": {"hidden": rng.randint(4, 64)}}, at=at + 0.2)
    for epoch in range(1, epochs + 1):
        moment = at + epoch
        log.append(namespace, job, "EpochCompleted",
                   {"epoch": epoch, "loss": 1.0 / epoch, "metrics": {"accuracy": rng.random()}},
                   at=moment)
        log.append(namespace, job, "MetricLogged",
                   {"name": "lr", "value": rng.random(), "step": epoch}, at=moment + 0.01)
        if epoch % 3 == 0:
            log.append(namespace, job, "CheckpointSaved",
                       {"step": epoch, "digest": f"{epoch:064x}"}, at=moment + 0.02)
    ending = rng.choice(["completed", "failed", "cancelled", "running"])
    end = at + epochs + 1
    if ending == "completed":
        log.append(namespace, job, "ModelSaved", {"model": {"format": "safetensors"}}, at=end)
        log.append(namespace, job, "JobCompleted", {"metrics": {"accuracy": 0.97}}, at=end + 0.1)
        log.append(namespace, job, "ModelRegistered", {"name": "iris", "version": "1.0.0"},
                   at=end + 0.2)
    elif ending == "failed":
        log.append(namespace, job, "JobFailed", {"error": "boom", "reason": "error"}, at=end)
    elif ending == "cancelled":
        log.append(namespace, job, "JobCancelled", {"by": "alice"}, at=end)
    return job


def _snapshot(log: JobLog, jobs: dict[str, str]) -> dict[str, object]:
    return {
        "states": {job: log.job(ns, job) for job, ns in jobs.items()},
        "curves": {job: log.curves(ns, job) for job, ns in jobs.items()},
        "lists": {ns: log.jobs(ns, limit=1000) for ns in set(jobs.values())},
        "by_experiment": log.jobs(NS, experiment="iris", limit=1000),
        "running": log.jobs(NS, status="running", limit=1000),
        "unfinished": log.unfinished(),
    }


def test_projections_rebuilt_from_the_log_equal_the_live_ones(log: JobLog) -> None:
    rng = random.Random(7)
    jobs: dict[str, str] = {}
    for i in range(30):
        namespace = rng.choice([NS, "team-b"])
        jobs[_history(log, rng, namespace, T0 + i * 20)] = namespace
    live = _snapshot(log, jobs)
    assert log.rebuild() == log.count()
    assert _snapshot(log, jobs) == live
    for job, ns in jobs.items():  # the projection's curves are the log's
        assert log.curves(ns, job) == log.curves_from_log(ns, job)


def test_replay_to_a_moment_gives_the_state_then(log: JobLog) -> None:
    job = new_job_id()
    log.append(NS, job, "JobSubmitted", {"spec": {"params": {"epochs": 3}}}, at=T0)
    log.append(NS, job, "JobStarted", {"attempt": 1}, at=T0 + 1)
    for epoch in (1, 2, 3):
        log.append(NS, job, "EpochCompleted", {"epoch": epoch, "loss": 1.0 / epoch}, at=T0 + 1 + epoch)
    log.append(NS, job, "JobCompleted", {"metrics": {"accuracy": 0.9}}, at=T0 + 5)

    assert log.state_at(NS, job, T0 - 1) is None
    queued = log.state_at(NS, job, T0 + 0.5)
    assert queued is not None and queued.status == "queued"
    middle = log.state_at(NS, job, T0 + 3.5)
    assert middle is not None and (middle.status, middle.epoch, middle.loss) == ("running", 2, 0.5)
    assert middle.view()["total_epochs"] == 3
    assert log.state_at(NS, job, T0 + 10) == log.job(NS, job)
    final = log.job(NS, job)
    assert final is not None and final.status == "succeeded"
    assert final.metrics == {"loss": 1 / 3, "accuracy": 0.9}
    assert log.curves(NS, job) == {"loss": [(1, 1.0), (2, 0.5), (3, 1 / 3)]}


def test_a_job_is_invisible_from_another_namespace(log: JobLog) -> None:
    job = new_job_id()
    log.append(NS, job, "JobSubmitted", {"spec": {}}, at=T0)
    log.append(NS, job, "MetricLogged", {"name": "x", "value": 1.0, "step": 0}, at=T0)
    assert log.job("team-b", job) is None
    assert log.events("team-b", job) == []
    assert log.curves("team-b", job) == {}
    assert log.jobs("team-b") == []
    with pytest.raises(LookupError):
        log.append("team-b", job, "JobStarted", {"attempt": 1})


def test_events_after_the_end_change_nothing_but_the_registration(log: JobLog) -> None:
    job = new_job_id()
    log.append(NS, job, "JobSubmitted", {"spec": {}}, at=T0)
    log.append(NS, job, "JobCancelled", {"by": "bob"}, at=T0 + 1)
    log.append(NS, job, "JobStarted", {"attempt": 2}, at=T0 + 2)  # a late report from the process
    state = log.job(NS, job)
    assert state is not None and (state.status, state.attempts) == ("cancelled", 0)
    assert state.last_seq == 3


@pytest.mark.parametrize(("type_", "data", "message"), [
    ("JobExploded", {}, "unknown job event type"),
    ("MetricLogged", {"name": "x"}, "missing value"),
    ("MetricLogged", {"name": "x", "value": "high"}, "must be a number"),
    ("MetricLogged", {"name": "x" * 64, "value": 1}, "1 to 63 characters"),
    ("EpochCompleted", {"epoch": 1.5, "loss": 0.1}, "epoch must be an integer"),
])
def test_a_malformed_event_is_refused_and_nothing_is_stored(
        log: JobLog, type_: str, data: dict[str, object], message: str) -> None:
    job = new_job_id()
    log.append(NS, job, "JobSubmitted", {"spec": {}}, at=T0)
    with pytest.raises(BadRequest, match=message):
        log.append(NS, job, type_, data)
    assert [event.type for event in log.events(NS, job)] == ["JobSubmitted"]


def test_a_job_is_submitted_once_and_first(log: JobLog) -> None:
    job = new_job_id()
    with pytest.raises(LookupError):
        log.append(NS, job, "JobStarted", {"attempt": 1})
    log.append(NS, job, "JobSubmitted", {"spec": {}})
    with pytest.raises(ValueError, match="already submitted"):
        log.append(NS, job, "JobSubmitted", {"spec": {}})


def test_the_jobs_submitted_since_a_moment_are_a_namespaces_oldest_first(log: JobLog) -> None:
    made = {}
    for namespace, at in ((NS, T0), (NS, T0 + 20), ("team-b", T0 + 30), (NS, T0 + 10)):
        job = new_job_id()
        log.append(namespace, job, "JobSubmitted", {"spec": {"source": {"tick": at}}}, at=at)
        made[(namespace, at)] = job
    assert [s.id for s in log.submitted_since(NS, T0 + 5)] == [made[(NS, T0 + 10)],
                                                                made[(NS, T0 + 20)]]
    assert [s.spec["source"] for s in log.submitted_since(NS, T0)] == [
        {"tick": T0}, {"tick": T0 + 10}, {"tick": T0 + 20}]
    assert log.submitted_since("team-b", T0 + 31) == []
