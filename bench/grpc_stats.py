"""Numbers of ``bench/grpc.py``: a client's measurement window, the merge of its client
processes into one cell, ratios and the goal lines. Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from common import percentile


@dataclass(frozen=True)
class Window:
    """What one client process measured: calls that ended inside ``seconds``."""

    seconds: float
    latencies_ms: list[float]
    extended: bool  # the window ran past --duration to reach --min-requests calls


def measured_window(completions: Sequence[tuple[float, float]], start: float, duration: float,
                    min_requests: int) -> Window:
    """``completions`` are ``(ended_at, latency_ms)`` of calls ending at or after ``start``.

    The window is ``[start, start + duration]``; when fewer than ``min_requests`` calls ended in
    it (a 40 MB JSON tensor takes seconds), it stretches to the ``min_requests``-th call's end,
    so a slow cell reports a rate over whole calls rather than 0 or 1 call per window.
    """
    ordered = sorted(c for c in completions if c[0] >= start)
    inside = [c for c in ordered if c[0] <= start + duration]
    if len(inside) >= min_requests or len(ordered) <= len(inside):
        return Window(duration, [latency for _, latency in inside], False)
    taken = ordered[:min_requests]
    return Window(taken[-1][0] - start, [latency for _, latency in taken], True)


@dataclass(frozen=True)
class Cell:
    """One target at one stream count: all its client processes together."""

    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    errors: int
    gbps: float  # tensor bytes per second through the server, all streams together
    gbps_one_call: float  # tensor bytes / p50 latency: one call's transport rate
    client_cpu_s: float
    extended: bool


def merge(reports: Sequence[Mapping[str, Any]], tensor_bytes: int) -> Cell:
    """Client reports (``window_s``, ``latencies_ms``, ``errors``, ``cpu_s``, ``extended``)
    into one cell: rates add up across processes, latencies pool."""
    latencies = [latency for report in reports for latency in report["latencies_ms"]]
    rate = sum(len(r["latencies_ms"]) / r["window_s"] for r in reports if r["window_s"] > 0)
    p50 = percentile(latencies, 50)
    return Cell(
        requests_per_s=rate,
        p50_ms=p50,
        p90_ms=percentile(latencies, 90),
        p99_ms=percentile(latencies, 99),
        requests=len(latencies),
        errors=sum(int(r["errors"]) for r in reports),
        gbps=rate * tensor_bytes / 1e9,
        gbps_one_call=tensor_bytes / (p50 / 1e3) / 1e9 if latencies and p50 > 0 else 0.0,
        client_cpu_s=sum(float(r["cpu_s"]) for r in reports),
        extended=any(r["extended"] for r in reports),
    )


def split_streams(streams: int, clients: int) -> list[int]:
    """Streams per client process: as even as possible, no process without a stream."""
    processes = max(1, min(streams, clients))
    base, extra = divmod(streams, processes)
    return [base + (1 if i < extra else 0) for i in range(processes)]


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return numerator / denominator


def goal_line(label: str, value: float | None, goal: float, unit: str) -> str:
    """``- label: 3.41x (goal >= 3x): MET``; an unmeasured value says so instead of passing."""
    if value is None:
        return f"- {label}: not measured (goal >= {goal:g}{unit}): NOT MET"
    verdict = "MET" if value >= goal else "NOT MET"
    return f"- {label}: {value:.2f}{unit} (goal >= {goal:g}{unit}): {verdict}"


def outputs_agree(checks: Mapping[str, Sequence[float]], tolerance: float = 1e-4) -> list[str]:
    """Targets whose first answer differs from the first target's (by more than ``tolerance``
    anywhere); ``[]`` when all agree."""
    items = list(checks.items())
    if not items:
        return []
    _, reference = items[0]
    return [
        name for name, values in items[1:]
        if len(values) != len(reference)
        or any(abs(a - b) > tolerance for a, b in zip(values, reference, strict=True))
    ]
