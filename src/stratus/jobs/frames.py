"""The rules for what a job's worker may say and how a run ends, pure: which events it may
record (and in what shape), the final metrics, and the event that ends the run."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from stratus.jobs.events import MAX_METRIC_NAME

# What the job's own code may record; the rest of a job's events are the server's to write.
WORKER_EVENTS = ("ParamsLogged", "MetricLogged", "EpochCompleted", "EvaluationCompleted")
MAX_PARAMS = 256


class BadFrame(ValueError):
    """A worker sent an event the log must not take (the SDK never sends one)."""


def _name(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_METRIC_NAME:
        raise BadFrame(f"a metric name is a string of 1 to {MAX_METRIC_NAME} characters, "
                       f"not {value!r}")
    return value


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadFrame(f"{what} must be a finite number, not {value!r}")
    return float(value)


def _integer(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) >= 2**31:
        raise BadFrame(f"{what} must be an integer, not {value!r}")
    return value


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | bool | int) or (
        isinstance(value, float) and math.isfinite(value))


def clean_event(kind: str, data: Any) -> dict[str, Any]:
    """The event's data as the log stores it: known fields only, each checked."""
    if kind not in WORKER_EVENTS:
        raise BadFrame(f"a job may not record {kind!r} events")
    if not isinstance(data, dict):
        raise BadFrame(f"{kind}: data must be a map")
    if kind == "ParamsLogged":
        params = data.get("params")
        if not isinstance(params, dict) or len(params) > MAX_PARAMS or not all(
                isinstance(k, str) and 0 < len(k) <= 128 and _scalar(v)
                for k, v in params.items()):
            raise BadFrame("ParamsLogged: params must map names to strings, numbers or bools")
        return {"params": params}
    if kind == "MetricLogged":
        step = data.get("step")
        return {"name": _name(data.get("name")), "value": _number(data.get("value"), "value"),
                "step": None if step is None else _integer(step, "step")}
    if kind == "EvaluationCompleted":
        return _evaluation(data)
    metrics = data.get("metrics") or {}
    if not isinstance(metrics, dict):
        raise BadFrame("EpochCompleted: metrics must be a map")
    return {"epoch": _integer(data.get("epoch"), "epoch"),
            "loss": _number(data.get("loss"), "loss"),
            "metrics": {_name(k): _number(v, f"metric {k!r}") for k, v in metrics.items()}}


def _evaluation(data: dict[str, Any]) -> dict[str, Any]:
    """A model's evaluation on a dataset's split: its scalar metrics, and the report (per-class
    figures, the confusion matrix) as JSON."""
    metrics = data.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        raise BadFrame("EvaluationCompleted: metrics must be a non-empty map")
    report = data.get("report") or {}
    try:
        json.dumps(report, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise BadFrame(f"EvaluationCompleted: the report must be JSON: {exc}") from None
    texts = {key: data.get(key) for key in ("model", "dataset", "split", "task")}
    if not all(value is None or (isinstance(value, str) and len(value) <= 200)
               for value in texts.values()):
        raise BadFrame("EvaluationCompleted: model, dataset, split and task are short strings")
    return {**texts, "samples": _integer(data.get("samples", 0), "samples"),
            "metrics": {_name(k): _number(v, f"metric {k!r}") for k, v in metrics.items()},
            "report": report}


def update_metrics(final: dict[str, float], kind: str, data: dict[str, Any]) -> None:
    """Keep the last value of each metric, as the run's final metrics."""
    if kind == "MetricLogged":
        final[data["name"]] = data["value"]
    elif kind == "EpochCompleted":
        final["loss"] = data["loss"]
        final.update(data["metrics"])


@dataclass(frozen=True)
class Ending:
    """What the run's worker told and what its process did, when it is over."""

    done_ok: bool | None  # None: it ended without saying (killed, crashed)
    done_error: str
    done_reason: str
    returncode: int
    kill_reason: str
    out_of_memory: bool
    settled: bool  # its end is already recorded (a cancel, the server stopping)
    timed_out: float | None  # the timeout it ran past, if it did
    memory_mb: int | None


def describe_exit(returncode: int) -> str:
    return f"killed by signal {-returncode}" if returncode < 0 else f"exit code {returncode}"


def final_event(ending: Ending, metrics: dict[str, float]) -> tuple[str, dict[str, Any]] | None:
    """The event that ends the run; None when a cancel (or the server stopping) ended it."""
    if ending.settled:
        return None
    if ending.timed_out is not None:
        return "JobFailed", {"error": f"the job ran past its timeout of {ending.timed_out:g}s",
                             "reason": "timeout"}
    if ending.out_of_memory or ending.done_reason == "out_of_memory":
        limit = f" of {ending.memory_mb} MB" if ending.memory_mb else ""
        return "JobFailed", {"error": f"the job exceeded its memory limit{limit}"
                                      + (f" ({ending.done_error})" if ending.done_error else ""),
                             "reason": "out_of_memory"}
    if ending.done_ok and ending.returncode == 0:
        return "JobCompleted", {"metrics": dict(metrics), "model_version": None}
    if ending.done_ok is False:
        return "JobFailed", {"error": ending.done_error, "reason": "error"}
    why = ending.kill_reason or describe_exit(ending.returncode)
    return "JobFailed", {"error": f"the job's process ended without finishing ({why})",
                         "reason": "crashed"}
