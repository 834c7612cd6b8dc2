"""The ``fixed_keepalive`` policy: the baseline of AWS Lambda and Azure Functions.

Every replica the load needed stays warm for ``keepalive_s`` after it was last needed:
the count is the peak concurrency of the last ``keepalive_s`` seconds over the target.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from stratus.autoscale.policy import Bounds, Decision, ReplicaCounts, demand_now
from stratus.dispatch.load import MetricSample


@dataclass(frozen=True)
class KeepAliveConfig:
    bounds: Bounds
    keepalive_s: float = 600.0


class FixedKeepAlivePolicy:
    name = "fixed_keepalive"

    def __init__(self, config: KeepAliveConfig) -> None:
        self.config = config
        # (last busy time, peak), peaks decreasing from the front: a sliding-window maximum.
        self.peaks: deque[tuple[float, int]] = deque()
        self.latest: MetricSample | None = None
        self.last_active: float | None = None

    def observe(self, sample: MetricSample) -> None:
        if sample.active:
            busy = sample.last_busy
            self.last_active = busy
            while self.peaks and self.peaks[-1][1] <= sample.peak_concurrency:
                self.peaks.pop()
            self.peaks.append((busy, sample.peak_concurrency))
        self.latest = sample

    def decide(self, now: float, counts: ReplicaCounts) -> Decision:
        config = self.config
        while self.peaks and self.peaks[0][0] < now - config.keepalive_s:
            self.peaks.popleft()
        peak = self.peaks[0][1] if self.peaks else 0
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
