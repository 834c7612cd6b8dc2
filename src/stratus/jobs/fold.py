"""A job's state as the fold of its events, pure: the live projection and a rebuild from the
log run this same code, which is why they cannot disagree."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from stratus.jobs.events import JobEvent

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True, slots=True)
class JobState:
    """What the job list and ``GET /api/jobs/{id}`` show."""

    id: str
    namespace: str
    status: str = "queued"
    experiment: str | None = None
    spec: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # the last value of each
    submitted_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    attempts: int = 0
    epoch: int | None = None
    loss: float | None = None
    checkpoints: int = 0
    last_checkpoint: str | None = None
    model: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    gate: dict[str, Any] | None = None
    model_version: str | None = None
    rollout: dict[str, Any] | None = None
    error: str | None = None
    reason: str | None = None
    last_seq: int = 0

    def view(self) -> dict[str, Any]:
        view = dataclasses.asdict(self)
        view["total_epochs"] = _total_epochs(self.params, self.spec)
        return view


def _total_epochs(params: dict[str, Any], spec: dict[str, Any]) -> int | None:
    for source in (params, spec.get("params") or {}):
        value = source.get("epochs")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def apply(state: JobState, event: JobEvent) -> JobState:
    """The state after ``event``. Events after the job ended change nothing but ``last_seq``,
    except the ones that record what became of its model (the gate, registration and rollout),
    which follow the job's completion."""
    data = event.data
    done = state.status in TERMINAL
    kind = event.type
    if kind == "JobSubmitted":
        spec = dict(data["spec"])
        return _seq(state, event, spec=spec, experiment=spec.get("experiment"),
                    params=dict(spec.get("params") or {}), submitted_at=event.at, status="queued")
    if kind == "GateJudged":
        return _seq(state, event, gate=dict(data))
    if kind == "ModelRegistered":
        return _seq(state, event, model_version=str(data["version"]))
    if kind == "RolloutStarted":
        return _seq(state, event, rollout=dict(data))
    if done:
        return _seq(state, event)
    if kind == "JobStarted":
        return _seq(state, event, status="running", started_at=event.at,
                    attempts=int(data["attempt"]))
    if kind == "ParamsLogged":
        return _seq(state, event, params={**state.params, **data["params"]})
    if kind == "MetricLogged":
        return _seq(state, event, metrics={**state.metrics, str(data["name"]): float(data["value"])})
    if kind == "EpochCompleted":
        metrics = {**state.metrics, "loss": float(data["loss"]),
                   **{str(k): float(v) for k, v in (data.get("metrics") or {}).items()}}
        return _seq(state, event, epoch=int(data["epoch"]), loss=float(data["loss"]),
                    metrics=metrics)
    if kind == "CheckpointSaved":
        return _seq(state, event, checkpoints=state.checkpoints + 1,
                    last_checkpoint=str(data["digest"]))
    if kind == "ModelSaved":
        return _seq(state, event, model=dict(data["model"]))
    if kind == "EvaluationCompleted":
        return _seq(state, event, evaluation=dict(data))
    if kind == "JobCompleted":
        metrics = {**state.metrics, **{str(k): float(v) for k, v in data["metrics"].items()}}
        return _seq(state, event, status="succeeded", ended_at=event.at, metrics=metrics,
                    model_version=data.get("model_version") or state.model_version)
    if kind == "JobFailed":
        return _seq(state, event, status="failed", ended_at=event.at, error=str(data["error"]),
                    reason=str(data["reason"]))
    if kind == "JobCancelled":
        return _seq(state, event, status="cancelled", ended_at=event.at,
                    reason=f"cancelled by {data['by']}")
    raise ValueError(f"unknown job event type {kind!r}")


def _seq(state: JobState, event: JobEvent, **changes: Any) -> JobState:
    return dataclasses.replace(state, last_seq=event.seq, **changes)


def points(event: JobEvent) -> list[tuple[str, int, float]]:
    """The metric-curve points an event adds: ``(name, step, value)``. A metric logged without
    a step takes the event's sequence number, so its points still come in order."""
    data = event.data
    if event.type == "MetricLogged":
        step = data.get("step")
        return [(str(data["name"]), event.seq if step is None else int(step), float(data["value"]))]
    if event.type == "EpochCompleted":
        epoch = int(data["epoch"])
        extra = [(str(k), epoch, float(v)) for k, v in (data.get("metrics") or {}).items()]
        return [("loss", epoch, float(data["loss"])), *extra]
    return []


def fold(namespace: str, job_id: str, events: Iterable[JobEvent],
         until: float | None = None) -> JobState | None:
    """A job's state from its events in order; with ``until``, as it was at that moment."""
    state: JobState | None = None
    for event in events:
        if until is not None and event.at > until:
            break
        state = apply(state or JobState(id=job_id, namespace=namespace), event)
    return state


def curves(events: Iterable[JobEvent]) -> dict[str, list[tuple[int, float]]]:
    """Each metric's points by step; a step logged twice keeps its last value."""
    by_name: dict[str, dict[int, float]] = {}
    for event in events:
        for name, step, value in points(event):
            by_name.setdefault(name, {})[step] = value
    return {name: sorted(steps.items()) for name, steps in sorted(by_name.items())}
