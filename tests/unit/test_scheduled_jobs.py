"""A job schedule's pure parts: the job a tick already started, found by its source among
recent jobs, and the body stored as the client gave it (``register``, not pydantic's name)."""

from __future__ import annotations

import json

from stratus.jobs.fold import JobState
from stratus.jobs.request import JobRequest
from stratus.triggers.scheduled_jobs import job_of_tick, stored_body

TICK = {"kind": "schedule", "schedule": "nightly", "tick": "2026-01-01T03:00:00Z"}


def _job(job_id: str, source: dict[str, str] | None) -> JobState:
    spec = {"params": {}} if source is None else {"params": {}, "source": source}
    return JobState(id=job_id, namespace="a", spec=spec)


def test_the_job_of_a_tick_is_the_one_its_source_names() -> None:
    jobs = [_job("job-1", None), _job("job-2", {**TICK, "schedule": "hourly"}),
            _job("job-3", {**TICK, "tick": "2026-01-02T03:00:00Z"}), _job("job-4", TICK)]
    found = job_of_tick(jobs, TICK)
    assert found is not None and found.id == "job-4"
    assert job_of_tick(jobs[:3], TICK) is None
    assert job_of_tick([], TICK) is None


def test_the_body_is_stored_as_given_with_register_by_its_name() -> None:
    given = {"code": {"bundle": "a" * 64, "entrypoint": "train.py:train"},
             "datasets": ["iris"], "register": {"name": "iris", "gate": ["accuracy>=0.9"]}}
    stored = json.loads(stored_body(JobRequest.model_validate(given)))
    assert stored == given  # no defaults written: they apply at each tick
    assert JobRequest.model_validate(stored).registration is not None
