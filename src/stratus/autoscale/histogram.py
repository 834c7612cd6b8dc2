"""The ``hybrid_histogram`` policy of Shahrad et al., "Serverless in the Wild" (ATC 2020).

Per deployment, a histogram of idle times (from the end of one invocation to the arrival
of the next; 1-minute bins over 4 hours by default). When it is representative, the
deployment is unloaded after an invocation and pre-warmed at the 5th-percentile idle time
(minus a 10% margin), then kept warm until the 99th percentile (plus 10%). When it is
not, it falls back to a fixed keep-alive. Replicas follow the load at the target concurrency;
the first follows the histogram, and the capacity a burst scaled out to beyond it is held for
the fixed keep-alive (not at all when the deployment is unloaded to be pre-warmed).

Deviations from the paper (see docs/autoscaling.md): idle times beyond the range fall back
to fixed keep-alive instead of an ARIMA forecast; the fallback keep-alive is configurable
(the paper uses the histogram range); a minimum sample count gates representativeness.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from stratus.autoscale.policy import Bounds, Decision, ReplicaCounts, demand_now
from stratus.dispatch.load import MetricSample


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


class IdleTimeHistogram:
    """Counts of idle times in fixed-width bins, with the out-of-range ones counted apart."""

    def __init__(self, bins: int, bin_s: float) -> None:
        self.bin_s = bin_s
        self.counts = [0] * bins
        self.total = 0
        self.out_of_range = 0

    def add(self, idle_s: float) -> None:
        index = int(max(0.0, idle_s) // self.bin_s)
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
        # (last busy time, peak), peaks decreasing from the front: the maximum of any
        # suffix window is its first entry.
        self.peaks: deque[tuple[float, int]] = deque()
        self.longest_s = max(bins * config.bin_s * (1.0 + config.margin), config.fallback_keepalive_s)
        self.latest: MetricSample | None = None
        self.idle_since: float | None = None  # when the last invocation finished
        self.busy_since: float | None = None  # when the current stretch of activity began
        # (why not representative, pre-warm, keep-until): derived from the histogram, which
        # changes only when an idle time arrives, so it is recomputed then, not every tick.
        self._verdict: tuple[str | None, float, float] | None = None

    def observe(self, sample: MetricSample) -> None:
        for gap in sample.idle_gaps:
            self.histogram.add(gap)
            self._verdict = None
        if sample.active:
            if self.idle_since is not None or self.busy_since is None:
                self.busy_since = sample.t - sample.interval_s
            while self.peaks and self.peaks[-1][1] <= sample.peak_concurrency:
                self.peaks.pop()
            self.peaks.append((sample.last_busy, sample.peak_concurrency))
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

    def verdict(self) -> tuple[str | None, float, float]:
        if self._verdict is None:
            why = self.representative()
            prewarm, keep_until = self.windows() if why is None else (0.0, 0.0)
            self._verdict = (why, prewarm, keep_until)
        return self._verdict

    def _peak_within(self, now: float, window: float) -> int:
        for busy, peak in self.peaks:
            if busy >= now - window:
                return peak
        return 0

    def decide(self, now: float, counts: ReplicaCounts) -> Decision:
        config, bounds = self.config, self.config.bounds
        while self.peaks and self.peaks[0][0] < now - self.longest_s:
            self.peaks.popleft()
        why_not, prewarm, keep_until = self.verdict()
        # The histogram learns when the deployment is next used, not how many replicas that
        # use will need: the capacity a burst scaled out to is held for the fixed keep-alive,
        # unless the deployment is to be unloaded and pre-warmed.
        hold = 0.0 if why_not is None and prewarm > 0 else config.fallback_keepalive_s
        if demand_now(self.latest):
            since = now - self.busy_since if self.busy_since is not None else 0.0
            peak = self._peak_within(now, max(hold, since))
            return bounds.clamp(max(1, bounds.replicas_for(peak)),
                                f"serving: peak concurrency {peak}", "active")
        if self.idle_since is None:
            return bounds.clamp(0, "no requests yet", "idle")
        idle = now - self.idle_since
        if why_not is not None:
            held = bounds.replicas_for(self._peak_within(now, hold)) if idle < hold else 0
            reason = f"fixed keep-alive {hold:g}s ({why_not}); idle {idle:.0f}s"
            return bounds.clamp(held, reason, "fallback")
        if idle < prewarm:
            return bounds.clamp(0, f"unloaded; pre-warm at {prewarm:.0f}s idle (now {idle:.0f}s)",
                                "unloaded")
        held = bounds.replicas_for(self._peak_within(now, hold)) if hold > 0 else 0
        if idle < keep_until:
            mode = "prewarmed" if prewarm > 0 else "keepalive"
            return bounds.clamp(max(1, held), f"warm from {prewarm:.0f}s to {keep_until:.0f}s "
                                f"idle (now {idle:.0f}s)", mode)
        extra = f"; holding {held} for the burst" if held else ""
        return bounds.clamp(held if held > 1 else 0,
                            f"idle {idle:.0f}s beyond the {keep_until:.0f}s keep-alive{extra}",
                            "unloaded")
