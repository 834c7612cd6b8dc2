"""Alert rules: the ``alerts:`` config section, what each rule measures over a window of
outcomes, and the latency z-score. Pure: no I/O and no clock."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from itertools import takewhile
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator

from stratus.dispatch.outcomes import percentile

RuleKind = Literal["error_ratio", "p95_latency", "cold_start_rate"]


class WebhookConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str
    timeout_s: float = Field(5.0, gt=0)
    retries: int = Field(3, ge=0, le=20)  # after the first attempt
    backoff_s: float = Field(0.5, ge=0)  # doubled after each failed attempt
    headers: dict[str, str] = Field(default_factory=dict)


class RuleConfig(BaseModel):
    """``error_ratio`` and ``cold_start_rate`` are fractions (0..1); ``p95_latency`` is in ms."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    kind: RuleKind
    threshold: float = Field(ge=0)
    deployment: str | None = None  # None: every deployment, each on its own
    namespace: str | None = None
    window_s: float = Field(60.0, gt=0)
    min_requests: int = Field(10, ge=1)  # fewer in the window: too little to judge

    def applies_to(self, namespace: str, deployment: str) -> bool:
        return ((self.deployment is None or self.deployment == deployment)
                and (self.namespace is None or self.namespace == namespace))


class AnomalyConfig(BaseModel):
    """A request is a latency anomaly when it is ``z`` standard deviations above the baseline
    AND takes at least ``min_latency_ms`` AND ``min_ratio`` times the baseline's mean: a 4 ms
    answer from a 1 ms handler is many deviations out, and no news."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    window: int = Field(100, ge=2)  # the last N latencies are the baseline
    z: float = Field(3.0, gt=0)
    min_samples: int = Field(30, ge=2)  # no judgement before the baseline has this many
    min_std_ms: float = Field(1.0, ge=0)  # jitter below this is not a spread to divide by
    min_latency_ms: float = Field(100.0, ge=0)  # the absolute floor
    min_ratio: float = Field(3.0, ge=1)  # times the baseline's mean
    quiet_s: float = Field(30.0, gt=0)  # resolved after this long without an anomaly


class AlertsConfig(BaseModel):
    """The ``alerts:`` section of the server's config file."""

    model_config = ConfigDict(extra="forbid")

    webhook: WebhookConfig | None = None
    rules: list[RuleConfig] = Field(default_factory=list)
    anomaly: AnomalyConfig = Field(default_factory=lambda: AnomalyConfig.model_validate({}))
    interval_s: float = Field(1.0, gt=0)  # how often rules are evaluated
    event_hold_s: float = Field(300.0, ge=0)  # a one-shot event shows as firing this long

    @model_validator(mode="after")
    def _unique_names(self) -> AlertsConfig:
        names = [rule.name for rule in self.rules]
        if len(names) != len(set(names)):
            raise ValueError("alert rule names must be unique")
        return self

    @property
    def longest_window_s(self) -> float:
        return max((rule.window_s for rule in self.rules), default=0.0)


class Sample(NamedTuple):
    """What the rules need of one outcome."""

    at: float  # wall clock, Unix seconds
    ok: bool
    latency_s: float
    cold_start: bool


def rule_value(kind: RuleKind, samples: Sequence[Sample], since: float,
               min_requests: int) -> float | None:
    """The rule's measure over the samples at or after ``since`` (``samples`` in time order);
    None below ``min_requests``."""
    window = list(takewhile(lambda sample: sample.at >= since, reversed(samples)))
    if len(window) < min_requests or not window:
        return None
    if kind == "error_ratio":
        return sum(1 for sample in window if not sample.ok) / len(window)
    if kind == "cold_start_rate":
        return sum(1 for sample in window if sample.cold_start) / len(window)
    p95 = percentile([sample.latency_s for sample in window], 95)
    assert p95 is not None
    return p95 * 1000


def next_state(firing: bool, value: float | None, threshold: float, empty: bool) -> bool:
    """Whether the rule fires after this evaluation. Too few requests to judge keep the state
    as it was, except a window with none at all: with no traffic, nothing is failing."""
    if value is None:
        return False if empty else firing
    return value > threshold


def zscore(baseline: Sequence[float], x: float, min_std: float = 0.0) -> float | None:
    """How many standard deviations ``x`` lies above the baseline's mean (None: < 2 samples)."""
    if len(baseline) < 2:
        return None
    mean = sum(baseline) / len(baseline)
    variance = sum((value - mean) ** 2 for value in baseline) / len(baseline)
    return (x - mean) / max(math.sqrt(variance), min_std, 1e-12)


class LatencyBaseline:
    """The last ``size`` latencies with running sums, so scoring a sample costs O(1)."""

    __slots__ = ("_count", "_sum", "_sumsq", "_values", "min_samples", "min_std")

    def __init__(self, size: int = 100, min_samples: int = 30, min_std: float = 0.0) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self._sum = 0.0
        self._sumsq = 0.0
        self._count = 0  # pushes since the sums were last recomputed exactly
        self.min_samples = max(2, min_samples)
        self.min_std = min_std

    def __len__(self) -> int:
        return len(self._values)

    @property
    def mean(self) -> float | None:
        n = len(self._values)
        return self._sum / n if n else None

    def score(self, x: float) -> float | None:
        """``x``'s z-score against the samples so far; None while there are too few."""
        n = len(self._values)
        if n < self.min_samples:
            return None
        mean = self._sum / n
        variance = max(0.0, self._sumsq / n - mean * mean)
        return (x - mean) / max(math.sqrt(variance), self.min_std, 1e-12)

    def add(self, x: float) -> None:
        values = self._values
        if len(values) == values.maxlen:
            old = values[0]
            self._sum -= old
            self._sumsq -= old * old
        values.append(x)
        self._sum += x
        self._sumsq += x * x
        self._count += 1
        if self._count >= 10 * (values.maxlen or 1):  # bound the rounding drift of the sums
            self._sum = math.fsum(values)
            self._sumsq = math.fsum(value * value for value in values)
            self._count = 0

    def observe(self, x: float) -> float | None:
        """Score ``x`` against the baseline, then make it part of the baseline."""
        z = self.score(x)
        self.add(x)
        return z


def latency_anomaly(baseline: LatencyBaseline, latency_s: float,
                    config: AnomalyConfig) -> float | None:
    """The request's z-score if it is an anomaly against ``baseline`` (see ``AnomalyConfig``),
    else None; either way the latency then joins the baseline."""
    mean = baseline.mean
    z = baseline.observe(latency_s)
    if z is None or z < config.z or latency_s * 1000 < config.min_latency_ms:
        return None
    if mean is not None and latency_s < config.min_ratio * mean:
        return None
    return z
