"""The ``hybrid_histogram`` policy of Shahrad et al., "Serverless in the Wild" (ATC 2020).

Per deployment, a histogram of idle times (from the end of one invocation to the arrival
of the next; 1-minute bins over 4 hours by default). When it is representative, the
deployment is unloaded after an invocation and pre-warmed at the 5th-percentile idle time
(minus a 10% margin), then kept warm until the 99th percentile (plus 10%). When it is
not, it falls back to a fixed keep-alive. While requests run, replicas follow the load at
the target concurrency; those beyond the first are held for ``cooldown_s`` after it falls.

Deviations from the paper (see docs/autoscaling.md): idle times beyond the range fall back
to fixed keep-alive instead of an ARIMA forecast; the fallback keep-alive is configurable
(the paper uses the histogram range); a minimum sample count gates representativeness.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from stratus.control.metrics import MetricSample
from stratus.control.policy import Bounds, Decision, ReplicaCounts, demand_now


@dataclass(frozen=True)
class HistogramConfig:
    bounds: Bounds
    bin_s: float = 60.0
    range_s: float = 4 * 3600.0
    head_percentile: float = 5.0
    tail_percentile: float = 99.0
    margin: float = 0.10
    cv_threshold: float = 2.0  # bin counts less varied than this show no usable pattern
    oob_threshold: float = 0.5  # share of idle times beyond the range that voids the histogram
    min_samples: int = 5
    fallback_keepalive_s: float = 600.0
    cooldown_s: float = 60.0


class IdleTimeHistogram:
    """Counts of idle times in fixed-width bins, with the out-of-range ones counted apart."""

    def __init__(self, bins: int, bin_s: float) -> None:
        self.bin_s = bin_s
        self.counts = [0] * bins
        self.total = 0
        self.out_of_range = 0

    def add(self, idle_s: float) -> None:
        index = int(idle_s // self.bin_s)
        if index < len(self.counts):
            self.counts[index] += 1
            self.total += 1
        else:
            self.out_of_range += 1

    def percentile_bin(self, percentile: float) -> int:
        needed = self.total * percentile / 100.0
        running = 0
        for index, count in enumerate(self.counts):
            running += count
            if running >= needed and running > 0:
                return index
        return len(self.counts) - 1

    def coefficient_of_variation(self) -> float:
        """Of the bin counts: high when idle times bunch up in a few bins (a pattern)."""
        n = len(self.counts)
        if self.total == 0 or n < 2:
            return 0.0
        mean = self.total / n
        variance = sum((count - mean) ** 2 for count in self.counts) / (n - 1)
        return math.sqrt(variance) / mean

    def out_of_range_share(self) -> float:
        seen = self.total + self.out_of_range
        return self.out_of_range / seen if seen else 0.0


class HybridHistogramPolicy:
    name = "hybrid_histogram"

    def __init__(self, config: HistogramConfig) -> None:
        self.config = config
        bins = max(1, round(config.range_s / config.bin_s))
        self.histogram = IdleTimeHistogram(bins, config.bin_s)
        self.samples: deque[MetricSample] = deque()
        self.latest: MetricSample | None = None
        self.idle_since: float | None = None  # when the last invocation finished

    def observe(self, sample: MetricSample) -> None:
        for gap in sample.idle_gaps:
            self.histogram.add(gap)
        if sample.active:
            self.samples.append(sample)
        if sample.idle_for_s is not None:
            self.idle_since = sample.t - sample.idle_for_s
        elif sample.active:
            self.idle_since = None
        self.latest = sample

    def representative(self) -> str | None:
        """None when the histogram can be trusted, else why not."""
        histogram, config = self.histogram, self.config
        if histogram.total < config.min_samples:
            return f"{histogram.total} idle times < {config.min_samples}"
        share = histogram.out_of_range_share()
        if share >= config.oob_threshold:
            return f"{share:.0%} of idle times beyond {config.range_s:g}s"
        cv = histogram.coefficient_of_variation()
        if cv < config.cv_threshold:
            return f"no clear pattern (CV {cv:.2f} < {config.cv_threshold:g})"
        return None

    def windows(self) -> tuple[float, float]:
        """(pre-warm, keep-alive end) in seconds after the last invocation finished."""
        config = self.config
        head = self.histogram.percentile_bin(config.head_percentile)
        tail = self.histogram.percentile_bin(config.tail_percentile)
        prewarm = head * config.bin_s * (1.0 - config.margin)
        keep_until = (tail + 1) * config.bin_s * (1.0 + config.margin)
        return prewarm, keep_until

    def decide(self, now: float, counts: ReplicaCounts) -> Decision:
        config = self.config
        while self.samples and self.samples[0].t < now - config.cooldown_s:
            self.samples.popleft()
        load = max((s.peak_concurrency for s in self.samples), default=0)
        reactive = config.bounds.replicas_for(load)
        if demand_now(self.latest):
            desired = max(reactive, 1)
            return config.bounds.clamp(desired, f"serving: peak concurrency {load}", "active")
        # Replicas a burst scaled out to are held for the cooldown; the single warm one
        # follows the histogram, unloaded right after an invocation as in the paper.
        reactive = reactive if reactive > 1 else 0
        if self.idle_since is None:
            return config.bounds.clamp(reactive, "no requests yet", "idle")
        idle = now - self.idle_since
        why_not = self.representative()
        if why_not is not None:
            warm = idle < config.fallback_keepalive_s
            reason = (f"fixed keep-alive {config.fallback_keepalive_s:g}s ({why_not}); "
                      f"idle {idle:.0f}s")
            return config.bounds.clamp(max(reactive, int(warm)), reason, "fallback")
        prewarm, keep_until = self.windows()
        if idle < prewarm:
            mode, warm = "unloaded", False
            reason = f"unloaded; pre-warm at {prewarm:.0f}s idle (now {idle:.0f}s)"
        elif idle < keep_until:
            mode, warm = ("prewarmed" if prewarm > 0 else "keepalive"), True
            reason = f"warm from {prewarm:.0f}s to {keep_until:.0f}s idle (now {idle:.0f}s)"
        else:
            mode, warm = "unloaded", False
            reason = f"idle {idle:.0f}s beyond the {keep_until:.0f}s keep-alive"
        return config.bounds.clamp(max(reactive, int(warm)), reason, mode)
