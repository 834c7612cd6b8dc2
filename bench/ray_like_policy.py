"""A policy that scales as Ray Serve's default autoscaler does, for comparison in the
simulator: the average ongoing requests over a 30 s look-back, acted on only after the
decision has held for ``upscale_delay_s`` (30 s) or ``downscale_delay_s`` (600 s).

From zero replicas a waiting request scales to one at once, as Ray Serve does.
"""

from __future__ import annotations

from collections import deque

from stratus.autoscale.policy import Bounds, Decision, ReplicaCounts, demand_now
from stratus.dispatch.load import MetricSample


class RayServeLikePolicy:
    name = "ray_serve_like"

    def __init__(self, bounds: Bounds, upscale_delay_s: float = 30.0,
                 downscale_delay_s: float = 600.0, look_back_s: float = 30.0) -> None:
        self.bounds = bounds
        self.upscale_delay_s = upscale_delay_s
        self.downscale_delay_s = downscale_delay_s
        self.look_back_s = look_back_s
        self.samples: deque[MetricSample] = deque()
        self.latest: MetricSample | None = None
        self.current = bounds.min_replicas
        self.up_since: float | None = None
        self.down_since: float | None = None

    def observe(self, sample: MetricSample) -> None:
        self.latest = sample
        if sample.interval_s > 0:
            self.samples.append(sample)

    def decide(self, now: float, counts: ReplicaCounts) -> Decision:
        while self.samples and self.samples[0].t <= now - self.look_back_s:
            self.samples.popleft()
        covered = sum(s.interval_s for s in self.samples)
        average = sum(s.average_concurrency * s.interval_s for s in self.samples) / covered \
            if covered > 0 else 0.0
        wanted = self.bounds.replicas_for(average)
        if self.current == 0 and demand_now(self.latest):
            self.current = 1
            self.up_since = self.down_since = None
            return self.bounds.clamp(1, "scale from zero at once", "stable")
        if wanted > self.current:
            self.down_since = None
            self.up_since = now if self.up_since is None else self.up_since
            if now - self.up_since >= self.upscale_delay_s:
                self.current, self.up_since = wanted, None
        elif wanted < self.current:
            self.up_since = None
            self.down_since = now if self.down_since is None else self.down_since
            if now - self.down_since >= self.downscale_delay_s:
                self.current, self.down_since = wanted, None
        else:
            self.up_since = self.down_since = None
        if demand_now(self.latest):
            self.current = max(self.current, 1)
        return self.bounds.clamp(self.current, f"ongoing {average:.2f} over {self.look_back_s:g}s "
                                 f"wants {wanted}", "stable")
