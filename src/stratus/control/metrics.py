"""Load samples that the dispatcher reports and the autoscaling policies read."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricSample:
    """Load of one revision over one sampling interval ending at ``t``."""

    t: float
    interval_s: float
    average_concurrency: float  # time-weighted requests in the system (executing + queued)
    peak_concurrency: int
    arrivals: int
    queued: int  # waiting at the end of the interval

    @property
    def rps(self) -> float:
        return self.arrivals / self.interval_s if self.interval_s > 0 else 0.0


class LoadRecorder:
    """Accumulates concurrency over time on the request path; O(1) per event."""

    __slots__ = ("_area", "_last_change", "_last_sample", "_peak", "arrivals", "current")

    def __init__(self, now: float) -> None:
        self.current = 0
        self.arrivals = 0
        self._area = 0.0
        self._peak = 0
        self._last_change = now
        self._last_sample = now

    def enter(self, now: float) -> None:
        self._area += self.current * (now - self._last_change)
        self._last_change = now
        self.current += 1
        self.arrivals += 1
        if self.current > self._peak:
            self._peak = self.current

    def leave(self, now: float) -> None:
        self._area += self.current * (now - self._last_change)
        self._last_change = now
        self.current -= 1

    def sample(self, now: float, queued: int) -> MetricSample:
        self._area += self.current * (now - self._last_change)
        self._last_change = now
        interval = now - self._last_sample
        average = self._area / interval if interval > 0 else float(self.current)
        sample = MetricSample(
            t=now,
            interval_s=interval,
            average_concurrency=average,
            peak_concurrency=max(self._peak, self.current),
            arrivals=self.arrivals,
            queued=queued,
        )
        self._area = 0.0
        self._peak = self.current
        self.arrivals = 0
        self._last_sample = now
        return sample
