"""Autoscaling policies: pure objects that turn load samples and a clock into a replica count.

A policy does no I/O and reads no clock of its own, so the live controller and an
offline simulator can run the very same object.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from stratus.control.metrics import MetricSample


@dataclass(frozen=True)
class ReplicaCounts:
    ready: int
    starting: int


@dataclass(frozen=True)
class Decision:
    desired: int
    reason: str


class ScalingPolicy(Protocol):
    name: str

    def observe(self, sample: MetricSample) -> None:
        """Record load; an ``interval_s`` of 0 is an instant reading (a request is waiting)."""
        ...

    def decide(self, now: float, counts: ReplicaCounts) -> Decision: ...


@dataclass(frozen=True)
class IdleTimeoutConfig:
    min_replicas: int
    max_replicas: int
    target_concurrency: float
    scale_to_zero_after_s: float


class IdleTimeoutPolicy:
    """Enough replicas for the peak concurrency seen within the window; after a whole window
    without requests, back to ``min_replicas`` (zero for a serverless deployment).

    The window is ``scale_to_zero_after_s``: scaling down waits that long after the load
    fell, so a burst does not pay a second cold start.
    """

    name = "idle_timeout"

    def __init__(self, config: IdleTimeoutConfig) -> None:
        self.config = config
        self.samples: deque[MetricSample] = deque()
        self.last_active: float | None = None

    def observe(self, sample: MetricSample) -> None:
        if sample.peak_concurrency > 0 or sample.arrivals > 0 or sample.queued > 0:
            self.last_active = sample.t
        self.samples.append(sample)

    def decide(self, now: float, counts: ReplicaCounts) -> Decision:
        config = self.config
        window = config.scale_to_zero_after_s
        while self.samples and self.samples[0].t < now - window:
            self.samples.popleft()
        peak = max((s.peak_concurrency for s in self.samples), default=0)
        last = self.samples[-1] if self.samples else None
        # A request running or waiting now is never idleness, whatever the window.
        demand_now = last is not None and (last.peak_concurrency > 0 or last.queued > 0)
        idle_since_window = self.last_active is None or now - self.last_active >= window
        if not demand_now and peak == 0 and idle_since_window:
            desired = config.min_replicas
            idle = "no requests yet" if self.last_active is None else (
                f"idle for {now - self.last_active:.0f}s >= {window:g}s"
            )
            reason = f"{idle}; holding min_replicas={desired}"
        else:
            desired = math.ceil(peak / config.target_concurrency)
            reason = (
                f"peak concurrency {peak} over the last {window:g}s at "
                f"target {config.target_concurrency:g} per replica"
            )
            if demand_now:
                desired = max(desired, 1)
        clamped = min(max(desired, config.min_replicas), config.max_replicas)
        if clamped != desired:
            reason += f"; clamped to [{config.min_replicas}, {config.max_replicas}]"
        return Decision(desired=clamped, reason=reason)
