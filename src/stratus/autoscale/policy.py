"""The autoscaling policy interface: pure objects that turn load samples and a clock into a
replica count with a reason.

A policy does no I/O and reads no clock of its own, so the live controller and the offline
simulator run the very same objects. The clock is Unix time in seconds (the simulator's
trace time), which scheduled floors need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from stratus.dispatch.load import MetricSample


@dataclass(frozen=True)
class ReplicaCounts:
    ready: int
    starting: int


@dataclass(frozen=True)
class Decision:
    desired: int
    reason: str
    mode: str = "stable"  # kpa: stable | panic; the others name their own states


class ScalingPolicy(Protocol):
    name: str

    def observe(self, sample: MetricSample) -> None:
        """Record load; an ``interval_s`` of 0 is an instant reading (a request is waiting)."""
        ...

    def decide(self, now: float, counts: ReplicaCounts) -> Decision: ...


@dataclass(frozen=True)
class Bounds:
    """What every policy shares: the replica range and the per-replica target."""

    min_replicas: int
    max_replicas: int
    target: float  # requests in flight (or per second, for kpa on rps) one replica should carry

    def replicas_for(self, load: float) -> int:
        return math.ceil(load / self.target - 1e-9) if load > 0 else 0

    def clamp(self, desired: int, reason: str, mode: str) -> Decision:
        clamped = min(max(desired, self.min_replicas), self.max_replicas)
        if clamped != desired:
            reason += f"; clamped to [{self.min_replicas}, {self.max_replicas}]"
        return Decision(clamped, reason, mode)


def demand_now(sample: MetricSample | None) -> bool:
    """A request is running or waiting: a policy must never take the last replica away."""
    return sample is not None and (sample.peak_concurrency > 0 or sample.queued > 0)
