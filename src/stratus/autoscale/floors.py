"""Replica floors that combine with any policy: provisioned concurrency (always warm) and
scheduled pre-warm windows given as cron expressions (croniter)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from stratus.autoscale.policy import Decision, ReplicaCounts, ScalingPolicy
from stratus.dispatch.load import MetricSample
from stratus.spec import ScheduleSpec


@dataclass(frozen=True)
class Schedule:
    """From each time ``cron`` fires, keep at least ``replicas`` warm for ``duration_s``."""

    cron: str
    duration_s: float
    replicas: int
    timezone: str = "UTC"
    # The firing that governs [start, end): reused until the clock leaves that span, since
    # croniter costs ~0.2 ms a call and a policy asks every tick.
    _span: list[float] = field(default_factory=lambda: [math.inf, -math.inf], compare=False,
                               repr=False)

    def __post_init__(self) -> None:
        if not croniter.is_valid(self.cron):
            raise ValueError(f"{self.cron!r} is not a valid cron expression")
        if self.duration_s <= 0 or self.replicas < 0:
            raise ValueError("a schedule needs a positive duration and a replica count >= 0")
        ZoneInfo(self.timezone)  # raises for an unknown zone

    @classmethod
    def of(cls, spec: ScheduleSpec) -> Schedule:
        return cls(spec.cron, spec.duration_s, spec.replicas, spec.timezone)

    def active(self, now: float) -> bool:
        span = self._span
        if not span[0] <= now < span[1]:
            # An aware datetime makes croniter read the expression in the schedule's zone;
            # starting just after now makes a window that opens exactly now count as open.
            moment = datetime.fromtimestamp(now, ZoneInfo(self.timezone)) + timedelta(milliseconds=1)
            cron = croniter(self.cron, moment)
            last_fire = cron.get_prev(datetime).timestamp()
            next_fire = croniter(self.cron, moment).get_next(datetime).timestamp()
            span[0], span[1] = last_fire, next_fire
        return now < span[0] + self.duration_s

    def describe(self) -> str:
        return f"'{self.cron}' for {self.duration_s:g}s keep {self.replicas}"


class WithFloors:
    """Wraps a policy: its decision never drops below the active floors (within max)."""

    def __init__(self, inner: ScalingPolicy, provisioned: int, schedules: list[Schedule],
                 max_replicas: int) -> None:
        self.inner = inner
        self.name = inner.name
        self.provisioned = provisioned
        self.schedules = schedules
        self.max_replicas = max_replicas

    def observe(self, sample: MetricSample) -> None:
        self.inner.observe(sample)

    def floor(self, now: float) -> tuple[int, str]:
        floor, why = self.provisioned, f"provisioned {self.provisioned}"
        for schedule in self.schedules:
            if schedule.replicas > floor and schedule.active(now):
                floor, why = schedule.replicas, f"schedule {schedule.describe()}"
        return floor, why

    def decide(self, now: float, counts: ReplicaCounts) -> Decision:
        decision = self.inner.decide(now, counts)
        floor, why = self.floor(now)
        floor = min(floor, self.max_replicas)
        if floor > decision.desired:
            return Decision(floor, f"{decision.reason}; floor {floor} from {why}", decision.mode)
        return decision
