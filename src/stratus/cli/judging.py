"""A rollout's timing and judge flags, shared by ``stratus deploy`` and ``stratus rollout``:
durations, the watch after a switch, the judging window and the rollback thresholds."""

from __future__ import annotations

import re
from typing import Annotated, Any

import typer

from stratus.spec import parse_duration as parse_clock

_MILLIS = re.compile(r"^(\d+(?:\.\d+)?)ms$")
_ZERO = re.compile(r"^0+(?:ms|s|m|h)?$")

Watch = Annotated[str | None, typer.Option(
    help="After the switch to 100%, judge the new revision this long (e.g. 60s, 5m; 0: not "
         "at all) while the previous one stays warm [default: the deployment's, 60s]")]
Window = Annotated[str | None, typer.Option(
    help="How far back the rollback check looks [default: the canary interval]")]
ErrorRatio = Annotated[float | None, typer.Option(
    min=0, max=100, help="Roll back when the error ratio is this much worse, relative "
                         "(0.1: 10% above the previous revision's) [default: 0.1]")]
MinErrors = Annotated[int | None, typer.Option(
    min=1, help="...and the new revision has at least this many errors [default: 5]")]
P95Relative = Annotated[float | None, typer.Option(
    min=0, max=100, help="Roll back when p95 latency is this much worse, relative "
                         "[default: 0.5]")]
P95MinDelta = Annotated[float | None, typer.Option(
    "--p95-min-delta-ms", min=0,
    help="...and at least this many milliseconds worse [default: 20]")]
MinRequests = Annotated[int | None, typer.Option(
    min=1, help="Requests each side needs before latency is judged [default: 20]")]


def parse_duration(text: str) -> float:
    """``500ms``, ``90``, ``90s``, ``2m``, ``1h`` or ``1h30m`` -> seconds."""
    match = _MILLIS.match(text.strip())
    # Everything but milliseconds is the schedules' syntax, so both read durations alike.
    seconds = float(match[1]) / 1000 if match is not None else parse_clock(text)
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return seconds


def duration_option(text: str, option: str, zero: bool = False) -> float:
    """``text`` as seconds, or a usage error naming ``option``; ``zero`` allows 0."""
    if zero and _ZERO.match(text.strip()):
        return 0.0
    try:
        return parse_duration(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a duration like 500ms, 90s, 2m or 1h",
                                 param_hint=option) from None


def judge_fields(*, watch: str | None, window: str | None, error_ratio_relative: float | None,
                 min_errors: int | None, p95_relative: float | None,
                 p95_min_delta_ms: float | None, min_requests: int | None) -> dict[str, Any]:
    """The ``rollout`` fields the flags set; the server takes the rest from the deployment."""
    fields: dict[str, Any] = {}
    if watch is not None:
        fields["watch_s"] = duration_option(watch, "--watch", zero=True)
    if window is not None:
        fields["window_s"] = duration_option(window, "--window")
    thresholds = {"error_ratio_relative": error_ratio_relative, "min_errors": min_errors,
                  "p95_relative": p95_relative, "p95_min_delta_ms": p95_min_delta_ms,
                  "min_requests": min_requests}
    given = {key: value for key, value in thresholds.items() if value is not None}
    if given:
        fields["thresholds"] = given
    return fields


def merge_rollout(declared: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """A manifest's ``rollout`` with the flags' fields over it, thresholds one by one."""
    merged = {**declared, **fields}
    if "thresholds" in fields and isinstance(declared.get("thresholds"), dict):
        merged["thresholds"] = {**declared["thresholds"], **fields["thresholds"]}
    return merged
