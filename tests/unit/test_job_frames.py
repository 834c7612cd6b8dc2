"""What a job's worker may record and how a run's end is decided, pure; the submission's and
the config section's validation; the job's usage record."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from stratus.backends.base import WorkerExit
from stratus.jobs.frames import BadFrame, Ending, clean_event, final_event, update_metrics
from stratus.jobs.metering import usage_record
from stratus.jobs.request import JobRequest, jobs_config

CODE = {"bundle": "a" * 64, "entrypoint": "train.py:train"}


def _ending(**changes: Any) -> Ending:
    base: dict[str, Any] = {"done_ok": True, "done_error": "", "done_reason": "", "returncode": 0,
                            "kill_reason": "", "out_of_memory": False, "settled": False,
                            "timed_out": None, "memory_mb": 512}
    return Ending(**{**base, **changes})


def test_worker_events_are_kept_to_their_known_fields() -> None:
    assert clean_event("MetricLogged", {"name": "acc", "value": 1, "step": 3, "x": 1}) == {
        "name": "acc", "value": 1.0, "step": 3}
    assert clean_event("EpochCompleted", {"epoch": 2, "loss": 0.5}) == {
        "epoch": 2, "loss": 0.5, "metrics": {}}
    assert clean_event("ParamsLogged", {"params": {"lr": 0.1, "opt": "adam", "x": None}}) == {
        "params": {"lr": 0.1, "opt": "adam", "x": None}}


@pytest.mark.parametrize(("kind", "data", "message"), [
    ("JobCompleted", {"metrics": {}}, "may not record"),
    ("MetricLogged", {"name": "", "value": 1}, "metric name"),
    ("MetricLogged", {"name": "x" * 64, "value": 1}, "metric name"),
    ("MetricLogged", {"name": "acc", "value": math.nan}, "finite number"),
    ("MetricLogged", {"name": "acc", "value": True}, "finite number"),
    ("MetricLogged", {"name": "acc", "value": 1, "step": 1.5}, "integer"),
    ("EpochCompleted", {"epoch": "1", "loss": 1}, "integer"),
    ("EpochCompleted", {"epoch": 1, "loss": 1, "metrics": {"a": b"x"}}, "finite number"),
    ("ParamsLogged", {"params": {"lr": [1]}}, "params must map"),
    ("ParamsLogged", [1], "data must be a map"),
])
def test_a_malformed_worker_event_is_refused(kind: str, data: Any, message: str) -> None:
    with pytest.raises(BadFrame, match=message):
        clean_event(kind, data)


def test_final_metrics_are_the_last_value_of_each() -> None:
    final: dict[str, float] = {}
    update_metrics(final, "MetricLogged", {"name": "acc", "value": 0.5, "step": None})
    update_metrics(final, "EpochCompleted", {"epoch": 1, "loss": 0.9, "metrics": {"acc": 0.6}})
    update_metrics(final, "EpochCompleted", {"epoch": 2, "loss": 0.4, "metrics": {}})
    assert final == {"acc": 0.6, "loss": 0.4}


def test_how_a_run_ends() -> None:
    metrics = {"loss": 0.1}
    assert final_event(_ending(), metrics) == ("JobCompleted", {"metrics": metrics,
                                                               "model_version": None})
    assert final_event(_ending(settled=True, done_ok=None, returncode=-9), metrics) is None
    failed = final_event(_ending(done_ok=False, done_error="ValueError: x", done_reason="error",
                                 returncode=1), metrics)
    assert failed == ("JobFailed", {"error": "ValueError: x", "reason": "error"})
    killed = final_event(_ending(done_ok=None, returncode=-9, out_of_memory=True), metrics)
    assert killed is not None and killed[1]["reason"] == "out_of_memory"
    assert "memory limit of 512 MB" in killed[1]["error"]
    refused = final_event(_ending(done_ok=False, done_reason="out_of_memory",
                                  done_error="MemoryError: "), metrics)
    assert refused is not None and refused[1]["reason"] == "out_of_memory"
    late = final_event(_ending(done_ok=None, returncode=-9, timed_out=2.5), metrics)
    assert late == ("JobFailed", {"error": "the job ran past its timeout of 2.5s",
                                  "reason": "timeout"})
    crashed = final_event(_ending(done_ok=None, returncode=-11), metrics)
    assert crashed is not None and crashed[1]["reason"] == "crashed"
    assert "killed by signal 11" in crashed[1]["error"]
    # It said it finished, then its process failed on the way out: not a success.
    assert final_event(_ending(returncode=3), metrics) == (
        "JobFailed", {"error": "the job's process ended without finishing (exit code 3)",
                      "reason": "crashed"})


def test_a_submission_is_checked() -> None:
    request = JobRequest.model_validate({"code": CODE, "params": {"lr": 0.1, "epochs": 3,
                                                                  "fast": True, "name": "x"}})
    assert request.params == {"lr": 0.1, "epochs": 3, "fast": True, "name": "x"}
    assert type(request.params["epochs"]) is int and request.workers == 1
    for bad in ({"params": {"lr": {"a": 1}}}, {"datasets": ["iris@1", "iris@1"]},
                {"experiment": "no spaces"}, {"memory_mb": 1}, {"timeout_s": 0},
                {"preload": ["not a module"]}, {"unknown": 1}, {"datasets": [" iris"]}):
        with pytest.raises(ValidationError):
            JobRequest.model_validate({"code": CODE, **bad})


def test_the_jobs_config_section() -> None:
    assert jobs_config({}).max_running == 2
    assert jobs_config({"max_running": 5}).max_running == 5
    with pytest.raises(ValueError, match="jobs: max_running"):
        jobs_config({"max_running": 0})
    with pytest.raises(ValueError, match="jobs: "):
        jobs_config({"maxrunning": 1})


def test_a_run_is_billed_its_limit_or_its_peak() -> None:
    ending = WorkerExit(0, "", False, cpu_s=1.5, peak_rss=300 * 2**20)
    limited = usage_record(namespace="ns", job_id="job-1", worker_id="job-1.1.0", experiment=None,
                           status="succeeded", memory_mb=1024, started_at=100.0, ended_at=110.0,
                           ending=ending)
    assert limited is not None
    assert (limited.duration_s, limited.cpu_seconds, limited.billed_memory_mb) == (10.0, 1.5, 1024)
    assert limited.gb_seconds == pytest.approx(10.0)
    peak = usage_record(namespace="ns", job_id="job-1", worker_id="w", experiment="e",
                        status="failed", memory_mb=None, started_at=100.0, ended_at=102.0,
                        ending=ending)
    assert peak is not None and peak.billed_memory_mb == 384  # 300 MiB in 128 MB steps
    never = usage_record(namespace="ns", job_id="job-1", worker_id="w", experiment=None,
                         status="failed", memory_mb=None, started_at=None, ended_at=1.0,
                         ending=None)
    assert never is None
