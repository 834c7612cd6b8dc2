"""What happened to each invocation, per revision: success or server-side error and latency,
kept for a bounded time so that rollouts can judge a revision and experiments can compare."""

from __future__ import annotations

import math
import time
from array import array
from bisect import bisect_left
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
    """A revision's recent outcomes: (monotonic time, ok, latency seconds) in three flat arrays,
    17 bytes an outcome. As a deque of tuples it took 120 (a tuple and two floats), so that an
    hour of a revision at 28 requests a second held 11.5 MiB, and every busy revision grew the
    server that much over its first hour (the soak's RSS slope, docs/reliability.md)."""

    __slots__ = ("_at", "_head", "_latency", "_ok", "errors", "total")

    def __init__(self) -> None:
        # Entries before ``_head`` are expired; they are cut off in one move once they are
        # half of the arrays, so an add costs O(1) amortised and never more than twice the
        # live entries are held.
        self._at = array("d")
        self._latency = array("d")
        self._ok = bytearray()
        self._head = 0
        self.total = 0  # ever, for the Prometheus counters
        self.errors = 0

    def __len__(self) -> int:
        return len(self._at) - self._head

    def add(self, ok: bool, latency_s: float, now: float | None = None) -> None:
        self.total += 1
        if not ok:
            self.errors += 1
        now = time.monotonic() if now is None else now
        at = self._at
        # The dispatcher's times never go back (taken just before this call, on the loop);
        # held in order, a window's start is found by bisection.
        if at and now < at[-1]:
            now = at[-1]
        at.append(now)
        self._latency.append(latency_s)
        self._ok.append(ok)
        size = len(at)
        head = max(self._head, size - KEEP_MAX)
        if at[head] < now - KEEP_S:
            head = bisect_left(at, now - KEEP_S, head, size)
        if head > size // 2:
            del at[:head], self._latency[:head], self._ok[:head]
            head = 0
        self._head = head

    def _first(self, start: float) -> int:
        """The index of the first entry at or after ``start`` (monotonic)."""
        return bisect_left(self._at, start, self._head, len(self._at))

    def window(self, start: float) -> WindowStats:
        """Requests, server errors and p95 latency (ms) since ``start`` (monotonic)."""
        first = self._first(start)
        p95 = percentile(self._latency[first:].tolist(), 95)
        return WindowStats(len(self._at) - first, self._ok.count(0, first),
                           p95 * 1000 if p95 is not None else None)

    def summary(self, start: float) -> dict[str, float | int | None]:
        """The public view of the window: counts and p50/p95 in milliseconds."""
        first = self._first(start)
        latencies = self._latency[first:].tolist()
        p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
        return {
            "requests": len(latencies),
            "errors": self._ok.count(0, first),
            "p50_ms": round(p50 * 1000, 3) if p50 is not None else None,
            "p95_ms": round(p95 * 1000, 3) if p95 is not None else None,
        }
