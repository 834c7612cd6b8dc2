"""The ``kpa`` policy: the Knative Pod Autoscaler's model.

Two windows average the metric (concurrency or requests per second): a stable window
(60 s) and a panic window (10% of it). The stable average sets the replica count; when the
panic average asks for twice the ready replicas or more, the policy panics: it follows
the panic window and never scales down, until a whole stable window passes without
another such burst. Scale-up and scale-down rates are bounded, and the last replica goes
only after ``scale_to_zero_after_s`` without a request (the scale-to-zero grace period);
after that long with none, the deployment goes to zero whatever the windows remember.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from stratus.autoscale.policy import Bounds, Decision, ReplicaCounts, demand_now
from stratus.dispatch.load import MetricSample


@dataclass(frozen=True)
class KpaConfig:
    bounds: Bounds
    metric: str = "concurrency"  # or "rps"
    stable_window_s: float = 60.0
    panic_window_pct: float = 10.0
    panic_threshold: float = 2.0  # desired / ready that starts a panic
    max_scale_up_rate: float = 1000.0  # at most this many times the ready replicas per decision
    max_scale_down_rate: float = 2.0  # at least ready / rate replicas stay per decision
    initial_replicas: int = 0
    scale_to_zero_after_s: float = 60.0

    @property
    def panic_window_s(self) -> float:
        return self.stable_window_s * self.panic_window_pct / 100.0


class KpaPolicy:
    name = "kpa"

    def __init__(self, config: KpaConfig) -> None:
        self.config = config
        self.samples: deque[MetricSample] = deque()
        self.latest: MetricSample | None = None
        self.last_active: float | None = None
        self.first_seen: float | None = None
        self.panic_since: float | None = None  # the last time the panic threshold was crossed
        self.panic_desired = 0
        self._covered = 0.0
        self._total = 0.0

    def observe(self, sample: MetricSample) -> None:
        if self.first_seen is None:
            self.first_seen = sample.t
        if sample.active:
            self.last_active = sample.last_busy
        self.latest = sample
        if sample.interval_s > 0:
            self.samples.append(sample)
            self._covered += sample.interval_s
            self._total += self._amount(sample)

    def _amount(self, sample: MetricSample) -> float:
        if self.config.metric == "rps":
            return float(sample.arrivals)
        return sample.average_concurrency * sample.interval_s

    def _panic_average(self, since: float) -> float:
        """The metric over the samples that end after ``since``: a short suffix of the window."""
        covered = total = 0.0
        for sample in reversed(self.samples):
            if sample.t <= since:
                break
            covered += sample.interval_s
            total += self._amount(sample)
        return total / covered if covered > 0 else 0.0

    def decide(self, now: float, counts: ReplicaCounts) -> Decision:
        config = self.config
        bounds = config.bounds
        while self.samples and self.samples[0].t <= now - config.stable_window_s:
            old = self.samples.popleft()
            self._covered -= old.interval_s
            self._total -= self._amount(old)
        # Running sums keep the stable average O(1) per decision.
        stable = max(0.0, self._total / self._covered) if self.samples and self._covered > 0 else 0.0
        panic = self._panic_average(now - config.panic_window_s)
        latest = self.latest
        if latest is not None and latest.interval_s == 0 and config.metric == "concurrency":
            # An instant reading (requests waiting for capacity) is the freshest panic signal.
            panic = max(panic, float(latest.peak_concurrency))
        ready = max(1, counts.ready)
        most = math.ceil(config.max_scale_up_rate * ready)
        least = math.floor(ready / config.max_scale_down_rate)
        raw_panic = bounds.replicas_for(panic)
        want_stable = min(max(bounds.replicas_for(stable), least), most)
        want_panic = min(max(raw_panic, least), most)

        # As Knative: the threshold looks at the demand itself, before the rate limits.
        if raw_panic / ready >= config.panic_threshold:
            if self.panic_since is None:
                self.panic_desired = 0
            self.panic_since = now
        elif self.panic_since is not None and now - self.panic_since >= config.stable_window_s:
            self.panic_since = None
            self.panic_desired = 0

        unit = "rps" if config.metric == "rps" else "concurrency"
        if self.panic_since is not None:
            # Provision for the stable window too when it asks for more; never scale down.
            desired = max(want_panic, want_stable, self.panic_desired)
            self.panic_desired = desired
            mode = "panic"
            reason = (f"panic: {unit} {panic:.2f} over {config.panic_window_s:g}s wants {want_panic} "
                      f"with {counts.ready} ready; no scale-down until {config.stable_window_s:g}s "
                      f"pass without demand >= {config.panic_threshold:g}x ready")
        else:
            desired = want_stable
            mode = "stable"
            reason = (f"{unit} {stable:.2f} over {config.stable_window_s:g}s at target "
                      f"{bounds.target:g} per replica")

        grace = config.scale_to_zero_after_s
        if demand_now(latest):
            desired = max(desired, 1)
        elif self.last_active is not None and now - self.last_active >= grace:
            # Nothing ran for the whole grace period: nothing to keep warm for.
            desired = 0
            mode = "stable"
            reason = f"no request for {now - self.last_active:.0f}s >= {grace:g}s: scale to zero"
        elif desired == 0 and counts.ready + counts.starting > 0 and self.last_active is not None:
            desired = 1
            reason += f"; keeping the last replica for the {grace:g}s scale-to-zero grace"
        if self.last_active is None and self.first_seen is not None and config.initial_replicas \
                and now - self.first_seen < config.stable_window_s:
            desired = max(desired, config.initial_replicas)
            reason += f"; initial_replicas={config.initial_replicas} until the first window"
        return bounds.clamp(desired, reason, mode)
