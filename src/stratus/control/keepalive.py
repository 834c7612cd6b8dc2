"""The ``fixed_keepalive`` policy: the baseline of AWS Lambda and Azure Functions.

Every replica the load needed stays warm for ``keepalive_s`` after it was last needed:
the count is the peak concurrency of the last ``keepalive_s`` seconds over the target.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from stratus.control.metrics import MetricSample
from stratus.control.policy import Bounds, Decision, ReplicaCounts, demand_now


@dataclass(frozen=True)
class KeepAliveConfig:
    bounds: Bounds
    keepalive_s: float = 600.0


class FixedKeepAlivePolicy:
    name = "fixed_keepalive"

    def __init__(self, config: KeepAliveConfig) -> None:
        self.config = config
        self.samples: deque[MetricSample] = deque()
        self.latest: MetricSample | None = None
        self.last_active: float | None = None

    def observe(self, sample: MetricSample) -> None:
        if sample.active:
            self.last_active = sample.t
            self.samples.append(sample)
        self.latest = sample

    def decide(self, now: float, counts: ReplicaCounts) -> Decision:
        config = self.config
        while self.samples and self.samples[0].t < now - config.keepalive_s:
            self.samples.popleft()
        peak = max((s.peak_concurrency for s in self.samples), default=0)
        desired = config.bounds.replicas_for(peak)
        if demand_now(self.latest):
            desired = max(desired, 1)
        if self.last_active is None:
            reason, mode = "no requests yet", "idle"
        elif desired == 0:
            reason = f"idle {now - self.last_active:.0f}s >= keep-alive {config.keepalive_s:g}s"
            mode = "idle"
        else:
            reason = (f"peak concurrency {peak} within the last {config.keepalive_s:g}s at "
                      f"target {config.bounds.target:g} per replica")
            mode = "active" if demand_now(self.latest) else "keepalive"
        return config.bounds.clamp(desired, reason, mode)
