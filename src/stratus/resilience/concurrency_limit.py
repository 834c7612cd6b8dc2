"""The adaptive concurrency limit, gradient-style (Netflix's Gradient2, Envoy's adaptive
concurrency): how many requests a revision admits at once, learnt from their latency (pure)."""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class LimitSettings:
    """``tolerance``: how far the typical latency may grow over the baseline before the limit
    is cut (1.5: a queue wait of half a service time). The baseline is the least median service
    time (latency less queue wait) of the windows in the last ``baseline_window_s``: a queue
    cannot inflate it, so a long overload does not teach the limit that queueing is normal."""

    initial_limit: float = 32.0
    min_limit: float = 1.0
    max_limit: float = 10_000.0
    tolerance: float = 1.5
    window_s: float = 0.25  # a new limit at most this often ...
    min_samples: int = 8  # ... and from at least this many finished requests
    baseline_window_s: float = 30.0
    smoothing: float = 0.5  # the share of a new limit taken at once

    def __post_init__(self) -> None:
        if not 1 <= self.min_limit <= self.max_limit:
            raise ValueError("limits must satisfy 1 <= min_limit <= max_limit")
        if not self.tolerance >= 1:
            raise ValueError("tolerance must be >= 1")
        if not (self.window_s > 0 and self.baseline_window_s > 0 and self.min_samples >= 1):
            raise ValueError("window_s and baseline_window_s must be > 0, min_samples >= 1")
        if not 0 < self.smoothing <= 1:
            raise ValueError("smoothing must be in (0, 1]")


class ConcurrencyLimit:
    """Admits while fewer than ``limit`` requests are in; every ``window_s`` compares the
    window's median latency with the baseline: while it holds (within ``tolerance``) and the
    limit is used, the limit grows by its square root; when it grows, the limit is cut in
    proportion (``gradient``, at most by half a window)."""

    def __init__(self, settings: LimitSettings, now: float) -> None:
        self.settings = settings
        self.limit = min(max(settings.initial_limit, settings.min_limit), settings.max_limit)
        self.inflight = 0
        self.baseline_s: float | None = None
        self.last_latency_s: float | None = None  # the median of the last finished window
        self.gradient = 1.0
        self._window_start = now
        self._latencies: list[float] = []
        self._services: list[float] = []
        self._peak = 0  # most requests in at once during the window
        self._baselines: deque[tuple[float, float]] = deque()  # (window end, median service)

    def allowed(self, share: float = 1.0) -> int:
        """Requests admitted at once by a caller entitled to ``share`` of the limit, rounded
        up: a small limit keeps every slot for its ordinary traffic."""
        return max(1, math.ceil(math.floor(self.limit) * share - 1e-9))

    def try_admit(self, share: float = 1.0) -> bool:
        if self.inflight >= self.allowed(share):
            return False
        self.inflight += 1
        self._peak = max(self._peak, self.inflight)
        return True

    def done(self, now: float, latency_s: float | None = None,
             service_s: float | None = None) -> None:
        """An admitted request ended; with its latency (arrival to answer) and service time
        (the part spent on a replica) when it says something about the revision's speed."""
        self.inflight -= 1
        if latency_s is not None and service_s is not None:
            self._latencies.append(latency_s)
            self._services.append(service_s)
        if now - self._window_start >= self.settings.window_s \
                and len(self._latencies) >= self.settings.min_samples:
            self._update(now)

    def _update(self, now: float) -> None:
        settings = self.settings
        service = statistics.median(self._services)
        latency = statistics.median(self._latencies)
        baselines = self._baselines
        while baselines and baselines[-1][1] >= service:
            baselines.pop()  # a later, smaller median outlives it: a monotonic deque
        baselines.append((now, service))
        while baselines[0][0] < now - settings.baseline_window_s:
            baselines.popleft()
        baseline = baselines[0][1]
        limit = self.limit
        gradient = 1.0 if latency <= 0 else \
            max(0.5, min(1.0, settings.tolerance * baseline / latency))
        if gradient >= 1.0:
            # Latency holds: grow, but only a limit that was used (an idle deployment's limit
            # would otherwise climb without any evidence that it can serve more).
            target = limit + math.sqrt(limit) if self._peak >= limit / 2 else limit
        else:
            target = limit * gradient
        limit += (target - limit) * settings.smoothing
        self.limit = min(max(limit, settings.min_limit), settings.max_limit)
        self.baseline_s, self.last_latency_s, self.gradient = baseline, latency, gradient
        self._window_start = now
        self._latencies, self._services = [], []
        self._peak = self.inflight
