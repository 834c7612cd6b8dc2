"""What happened to each invocation, per revision: success or server-side error and latency,
kept for a bounded time so that rollouts can judge a revision and experiments can compare."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from stratus.resilience.priority import Priority

KEEP_S = 3600.0  # an hour of outcomes per revision
KEEP_MAX = 100_000  # and never more than this many


@dataclass(slots=True)
class Outcome:
    """One finished invocation, as every observer sees it (rollouts, experiments, metrics,
    usage). ``ok`` is False for server-side failures only (status >= 500): a client's bad
    request or a shed request says nothing about the revision's health. Observers must not
    change it; it is not frozen because a frozen dataclass's constructor costs twice as much,
    once per invocation."""

    namespace: str
    deployment: str
    revision: int
    ok: bool
    latency_s: float
    shadow: bool  # a copy sent to the shadow revision, whose answer nobody saw
    at: float  # wall clock (Unix seconds) when it finished
    request_id: str = ""
    protocol: str = "native"  # native, v2 or openai
    status: int = 200  # the HTTP status the error maps to; 200 for an answer
    queue_wait_s: float = 0.0  # held for a slot (a cold start's wait included)
    cold_start: bool = False
    replica_id: str | None = None  # None when no replica was reached
    error_type: str | None = None  # the error's type (handler_error, timeout, ...)
    attempt: int = 1  # how many times it was sent to a replica (retries of lost work)
    retry_denied: str | None = None  # why its last failure was not retried (resilience/retry.py)
    trace_id: str | None = None  # with a client's traceparent, or when sampled
    span_id: str | None = None  # the gateway's span of the request
    priority: Priority = Priority.NORMAL  # under load shedding, within what its key allows


OutcomeListener = Callable[[Outcome], None]


@dataclass(frozen=True)
class WindowStats:
    """One revision's requests over the judging window."""

    requests: int
    errors: int
    p95_ms: float | None

    @property
    def error_ratio(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank ``q`` percentile (0..100) of ``values``, or None if there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


class OutcomeLog:
    """A revision's recent outcomes as (monotonic time, ok, latency seconds)."""

    __slots__ = ("_entries", "errors", "total")

    def __init__(self) -> None:
        self._entries: deque[tuple[float, bool, float]] = deque(maxlen=KEEP_MAX)
        self.total = 0  # ever, for the Prometheus counters
        self.errors = 0

    def add(self, ok: bool, latency_s: float, now: float | None = None) -> None:
        self.total += 1
        if not ok:
            self.errors += 1
        now = time.monotonic() if now is None else now
        entries = self._entries
        entries.append((now, ok, latency_s))
        while entries and entries[0][0] < now - KEEP_S:
            entries.popleft()

    def since(self, start: float) -> list[tuple[float, bool, float]]:
        return [entry for entry in self._entries if entry[0] >= start]

    def window(self, start: float) -> WindowStats:
        """Requests, server errors and p95 latency (ms) since ``start`` (monotonic)."""
        entries = self.since(start)
        errors = sum(1 for _, ok, _ in entries if not ok)
        p95 = percentile([latency for _, _, latency in entries], 95)
        return WindowStats(len(entries), errors, p95 * 1000 if p95 is not None else None)

    def summary(self, start: float) -> dict[str, float | int | None]:
        """The public view of the window: counts and p50/p95 in milliseconds."""
        entries = self.since(start)
        latencies = [latency for _, _, latency in entries]
        p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
        return {
            "requests": len(entries),
            "errors": sum(1 for _, ok, _ in entries if not ok),
            "p50_ms": round(p50 * 1000, 3) if p50 is not None else None,
            "p95_ms": round(p95 * 1000, 3) if p95 is not None else None,
        }
