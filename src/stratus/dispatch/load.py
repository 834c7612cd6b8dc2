"""The load a revision carries, as the dispatcher records it on the request path (O(1) per
event) and as the autoscaling policies read it: samples of concurrency, arrivals and idle gaps."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricSample:
    """Load of one revision over one sampling interval ending at ``t`` (policy clock, s).

    An ``interval_s`` of 0 marks an instant reading, taken when a request had to wait.
    """

    t: float
    interval_s: float
    average_concurrency: float  # time-weighted requests in the system (executing + queued)
    peak_concurrency: int  # the most at once during the interval, and at least those now
    arrivals: int
    queued: int  # waiting at the end of the interval
    idle_gaps: tuple[float, ...] = ()  # idle times that ended in the interval: arrival - last finish
    idle_for_s: float | None = None  # how long nothing has run, at ``t``; None while busy or never used
    # For each level 1..peak of concurrency, how long before ``t`` it was last reached (0: it
    # holds at ``t``); higher levels ended no later than lower ones. A replica that level k
    # needed was last needed then, not at the interval's end.
    levels_ago_s: tuple[float, ...] = ()

    @property
    def rps(self) -> float:
        return self.arrivals / self.interval_s if self.interval_s > 0 else 0.0

    @property
    def active(self) -> bool:
        return self.peak_concurrency > 0 or self.arrivals > 0 or self.queued > 0

    @property
    def last_busy(self) -> float:
        """When something last ran in this interval: its end, or when the last request left."""
        return self.t - self.idle_for_s if self.idle_for_s is not None else self.t

    def levels_at_ago(self) -> tuple[float, ...]:
        """``levels_ago_s``, or for a sample built without it, every level dated by the last
        busy moment."""
        if len(self.levels_ago_s) == self.peak_concurrency:
            return self.levels_ago_s
        return (self.t - self.last_busy,) * self.peak_concurrency


class LoadRecorder:
    """Accumulates concurrency over time on the request path; O(1) per event.

    ``now`` values are on the recorder's own clock (monotonic live, simulated offline);
    ``sample`` stamps the result with the policy clock it is given.
    """

    __slots__ = ("_area", "_gaps", "_idle_since", "_last_change", "_last_sample", "_left",
                 "_peak", "arrivals", "current")

    def __init__(self, now: float) -> None:
        self.current = 0
        self.arrivals = 0
        self._area = 0.0
        self._peak = 0
        self._left: list[float] = []  # [k - 1]: when the count last fell below k, k <= peak
        self._last_change = now
        self._last_sample = now
        self._idle_since: float | None = None
        self._gaps: list[float] = []

    def enter(self, now: float) -> None:
        self._area += self.current * (now - self._last_change)
        self._last_change = now
        if self.current == 0 and self._idle_since is not None:
            self._gaps.append(max(0.0, now - self._idle_since))
        self.current += 1
        self.arrivals += 1
        if self.current > self._peak:
            self._peak = self.current

    def leave(self, now: float) -> None:
        self._area += self.current * (now - self._last_change)
        self._last_change = now
        left = self._left
        if len(left) < self.current:  # a level reached before the first sample of a burst
            left.extend([now] * (self.current - len(left)))
        left[self.current - 1] = now
        self.current -= 1
        if self.current == 0:
            self._idle_since = now

    def sample(self, now: float, queued: int, t: float | None = None) -> MetricSample:
        self._area += self.current * (now - self._last_change)
        self._last_change = now
        interval = now - self._last_sample
        average = self._area / interval if interval > 0 else float(self.current)
        idle_for = None
        if self.current == 0 and self._idle_since is not None:
            idle_for = max(0.0, now - self._idle_since)
        peak = max(self._peak, self.current)
        current, left = self.current, self._left
        levels = tuple(0.0 if k < current else max(0.0, now - left[k]) for k in range(peak))
        sample = MetricSample(
            t=now if t is None else t,
            interval_s=interval,
            average_concurrency=average,
            peak_concurrency=peak,
            arrivals=self.arrivals,
            queued=queued,
            idle_gaps=tuple(self._gaps),
            idle_for_s=idle_for,
            levels_ago_s=levels,
        )
        self._area = 0.0
        self._peak = self.current
        del left[current:]  # levels above today's count start the next interval unreached
        self.arrivals = 0
        self._gaps.clear()
        self._last_sample = now
        return sample

    def instant(self, now: float, queued: int, t: float | None = None) -> MetricSample:
        """A reading that leaves the interval's accumulators alone (for the activator)."""
        return MetricSample(
            t=now if t is None else t, interval_s=0.0, average_concurrency=float(self.current),
            peak_concurrency=self.current, arrivals=0, queued=queued,
        )


def combine(samples: list[MetricSample]) -> MetricSample | None:
    """The load of several revisions as one deployment's: concurrency and arrivals add up;
    the deployment is idle only as long as all of them are."""
    if len(samples) <= 1:
        return samples[0] if samples else None
    # A revision that never ran anything says nothing about how long the deployment idled.
    idle = [s.idle_for_s for s in samples if s.idle_for_s is not None or s.active]
    return MetricSample(
        t=max(s.t for s in samples),
        interval_s=max(s.interval_s for s in samples),
        average_concurrency=sum(s.average_concurrency for s in samples),
        peak_concurrency=sum(s.peak_concurrency for s in samples),
        arrivals=sum(s.arrivals for s in samples),
        queued=sum(s.queued for s in samples),
        idle_gaps=tuple(gap for s in samples for gap in s.idle_gaps),
        idle_for_s=None if not idle or None in idle else min(i for i in idle if i is not None),
        # Levels of a sum of loads: the k-th most recent of all the revisions' levels (exact
        # when their peaks overlapped, and never shorter than any one revision's).
        levels_ago_s=tuple(sorted(ago for s in samples for ago in s.levels_at_ago())),
    )
