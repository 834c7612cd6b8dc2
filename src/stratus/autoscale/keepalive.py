"""The ``fixed_keepalive`` policy: the baseline of AWS Lambda and Azure Functions.

Every replica the load needed stays warm for ``keepalive_s`` after it was last needed:
the count is the peak concurrency of the last ``keepalive_s`` seconds over the target.
"""

from __future__ import annotations

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
        # [k - 1]: when a concurrency of k was last reached; never increasing in k, so the
        # levels still within the keep-alive are a prefix.
        self.needed: list[float] = []
        self.latest: MetricSample | None = None
        self.last_active: float | None = None

    def observe(self, sample: MetricSample) -> None:
        if sample.active:
            self.last_active = sample.last_busy
            needed = self.needed
            for k, ago in enumerate(sample.levels_at_ago()):
                at = sample.t - ago
                if k == len(needed):
                    needed.append(at)
                elif at > needed[k]:
                    needed[k] = at
        self.latest = sample

    def decide(self, now: float, counts: ReplicaCounts) -> Decision:
        config = self.config
        needed, horizon = self.needed, now - config.keepalive_s
        while needed and needed[-1] < horizon:
            needed.pop()
        peak = len(needed)
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
