"""The events a job's history is made of: their names, the fields each must carry, and ids.

A job's state is never written directly: it is the fold of these events (``fold.py``), which
the event log (``log.py``) appends in order and projects into the tables that answer queries.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from stratus.errors import BadRequest

# Each type with the fields its data must hold; more fields are kept as given.
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "JobSubmitted": ("spec",),
    "JobStarted": ("attempt",),
    "ParamsLogged": ("params",),
    "MetricLogged": ("name", "value"),
    "EpochCompleted": ("epoch", "loss"),
    "CheckpointSaved": ("step", "digest"),
    "ModelSaved": ("model",),
    "EvaluationCompleted": ("metrics",),
    "GateJudged": ("passed",),
    "ModelRegistered": ("name", "version"),
    "RolloutStarted": ("deployment",),
    "JobCompleted": ("metrics",),
    "JobFailed": ("error", "reason"),
    "JobCancelled": ("by",),
}
EVENT_TYPES = tuple(REQUIRED_FIELDS)
MAX_METRIC_NAME = 63


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One fact about a job: ``seq`` orders a job's events (1, 2, ...), ``at`` is when the
    server appended it (Unix seconds), ``data`` the type's fields."""

    job_id: str
    seq: int
    type: str
    at: float
    data: dict[str, Any]

    def view(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "seq": self.seq, "type": self.type, "at": self.at,
                "data": self.data}


def new_job_id() -> str:
    return "job-" + secrets.token_hex(8)


def check_event(type_: str, data: dict[str, Any]) -> None:
    """Refuse an event the fold would not understand, before it is stored forever."""
    required = REQUIRED_FIELDS.get(type_)
    if required is None:
        raise BadRequest(f"unknown job event type {type_!r}; known: {', '.join(EVENT_TYPES)}")
    if not isinstance(data, dict):
        raise BadRequest(f"{type_}: data must be an object")
    missing = [name for name in required if name not in data]
    if missing:
        raise BadRequest(f"{type_}: missing {', '.join(missing)}")
    if type_ == "MetricLogged":
        _check_number(type_, "value", data["value"])
        if not isinstance(data["name"], str) or not 0 < len(data["name"]) <= MAX_METRIC_NAME:
            raise BadRequest(f"{type_}: a metric name is a string of 1 to {MAX_METRIC_NAME} "
                             "characters")
    if type_ == "EpochCompleted":
        _check_number(type_, "loss", data["loss"])
        if not isinstance(data["epoch"], int) or isinstance(data["epoch"], bool):
            raise BadRequest(f"{type_}: epoch must be an integer")


def _check_number(type_: str, field: str, value: Any) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise BadRequest(f"{type_}: {field} must be a number, not {value!r}")
