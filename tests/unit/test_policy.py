"""Unit tests for the policy interface and the properties every autoscaling policy keeps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stratus.autoscale.floors import Schedule, WithFloors
from stratus.autoscale.histogram import HistogramConfig, HybridHistogramPolicy
from stratus.autoscale.keepalive import FixedKeepAlivePolicy, KeepAliveConfig
from stratus.autoscale.kpa import KpaConfig, KpaPolicy
from stratus.autoscale.policy import Bounds, Decision, ReplicaCounts, ScalingPolicy, demand_now
from stratus.dispatch.load import LoadRecorder, MetricSample

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z: schedules make the absolute time matter


def sample(t: float, *, peak: int = 0, queued: int = 0, arrivals: int = 0,
           interval: float = 10.0) -> MetricSample:
    return MetricSample(t=t, interval_s=interval, average_concurrency=float(peak),
                        peak_concurrency=peak, arrivals=arrivals, queued=queued)


# -- Bounds, Decision, demand_now ------------------------------------------------------


@pytest.mark.parametrize(
    ("load", "target", "expected"),
    [(0.0, 1.0, 0), (-1.0, 1.0, 0), (0.001, 1.0, 1), (1.0, 1.0, 1), (1.5, 1.0, 2), (8.0, 8.0, 1),
     (64.0, 8.0, 8), (64.1, 8.0, 9), (5.6, 5.6, 1), (3 * 0.7, 0.7, 3), (1.0, 0.5, 2)],
)
def test_replicas_for_is_load_over_target_rounded_up(load: float, target: float, expected: int) -> None:
    assert Bounds(0, 100, target).replicas_for(load) == expected


def test_replicas_for_forgives_float_noise_just_above_a_whole_number() -> None:
    # 0.1 * 3 / 0.1 is 3.0000000000000004: still three replicas, not four.
    assert Bounds(0, 100, 0.1).replicas_for(0.1 * 3) == 3


@pytest.mark.parametrize(
    ("desired", "expected", "clamped"),
    [(0, 1, True), (1, 1, False), (3, 3, False), (5, 5, False), (6, 5, True), (100, 5, True)],
)
def test_clamp_keeps_the_range_and_says_so(desired: int, expected: int, clamped: bool) -> None:
    decision = Bounds(1, 5, 1.0).clamp(desired, "why", "stable")
    assert decision.desired == expected
    assert decision.mode == "stable"
    assert decision.reason.startswith("why")
    assert ("clamped to [1, 5]" in decision.reason) is clamped


def test_decision_defaults_to_the_stable_mode() -> None:
    assert Decision(2, "r") == Decision(desired=2, reason="r", mode="stable")


@pytest.mark.parametrize(
    ("reading", "expected"),
    [
        (None, False),
        (sample(1.0), False),
        (sample(1.0, arrivals=3), False),  # they came and went: nothing runs or waits now
        (sample(1.0, peak=1), True),
        (sample(1.0, queued=1), True),
        (sample(1.0, queued=2, interval=0.0), True),
    ],
)
def test_demand_now_means_running_or_waiting(reading: MetricSample | None, expected: bool) -> None:
    assert demand_now(reading) is expected


# -- properties of every policy ---------------------------------------------------------


@dataclass(frozen=True)
class Observe:
    sample: MetricSample


@dataclass(frozen=True)
class Decide:
    now: float
    ready: int
    starting: int


Op = Observe | Decide


GAPS = st.lists(st.sampled_from([0.0, 5.0, 30.0, 59.0, 61.0, 599.0, 3600.0, 20_000.0]) | st.floats(0.0, 2e4),
                max_size=3)
DELAYS = st.sampled_from([0.0, 1.0, 2.0, 10.0, 30.0, 61.0, 600.0]) | st.floats(0.0, 900.0)


@st.composite
def free_samples(draw: st.DrawFn, start: float) -> list[Op]:
    """Samples with independent fields, however odd, on a clock that only moves forward."""
    ops: list[Op] = []
    now = start
    for _ in range(draw(st.integers(0, 30))):
        now += draw(DELAYS)
        interval, peak, share, arrivals, queued, gaps, idle_for = draw(st.tuples(
            st.sampled_from([1.0, 10.0, 0.0, 60.0]), st.integers(0, 80), st.sampled_from([1.0, 0.5, 0.0]),
            st.integers(0, 100), st.sampled_from([0, 1, 7, 40]), GAPS,
            st.sampled_from([None, 0.0, 30.0, 700.0, 5000.0])))
        ops.append(Observe(MetricSample(
            t=now, interval_s=interval, average_concurrency=peak * share, peak_concurrency=peak,
            arrivals=arrivals, queued=queued, idle_gaps=tuple(gaps), idle_for_s=idle_for,
        )))
        for later, ready, starting in draw(st.lists(st.tuples(
                DELAYS, st.integers(0, 12), st.sampled_from([0, 1, 4])), max_size=2)):
            now += later  # decisions without a fresh sample, the clock still moving on
            ops.append(Decide(now, ready, starting))
    return ops


@st.composite
def recorded_samples(draw: st.DrawFn, start: float) -> list[Op]:
    """Requests arrive and finish on a fake clock; a LoadRecorder turns them into samples."""
    ops: list[Op] = []
    now = start
    recorder = LoadRecorder(now)
    for _ in range(draw(st.integers(0, 60))):
        now += draw(st.sampled_from([0.0, 0.5, 1.0, 5.0]) | st.floats(0.0, 700.0))
        action = draw(st.sampled_from(["enter", "enter", "leave", "leave", "tick", "instant"]))
        if action == "enter":
            recorder.enter(now)
        elif action == "leave" and recorder.current > 0:
            recorder.leave(now)
        else:
            queued = draw(st.integers(0, recorder.current))
            reading = recorder.instant(now, queued) if action == "instant" \
                else recorder.sample(now, queued)
            ops.append(Observe(reading))
            ops.append(Decide(now, draw(st.integers(0, 12)), draw(st.integers(0, 4))))
    return ops


@st.composite
def periodic_samples(draw: st.DrawFn, start: float) -> list[Op]:
    """Requests every ``period`` seconds (with some jitter), sampled every ``period / 10``: the
    idle-time pattern the hybrid histogram learns, and the idle stretches around it."""
    period = draw(st.sampled_from([60.0, 300.0, 600.0, 1800.0]))
    jitters = draw(st.lists(st.sampled_from([0.0, 0.0, 0.02, 0.1, 0.5]), max_size=10))
    width = draw(st.sampled_from([1, 3]))
    duration = draw(st.sampled_from([0.5, 5.0]))
    ready = draw(st.integers(0, 3))
    events: list[tuple[float, int]] = []  # (time, +1 enter / -1 leave)
    for index, jitter in enumerate(jitters):
        arrival = start + (index + 1) * period * (1 + jitter)
        events += [(arrival, 1)] * width + [(arrival + duration, -1)] * width
    events.sort(key=lambda event: (event[0], -event[1]))
    recorder = LoadRecorder(start)
    ops: list[Op] = []
    tick = period / 10
    now = start
    end = start + (len(jitters) + 3) * period * 1.5
    while now < end:
        now += tick
        while events and events[0][0] <= now:
            at, step = events.pop(0)
            if step > 0:
                recorder.enter(at)
            else:
                recorder.leave(at)
        ops.append(Observe(recorder.sample(now, 0)))
        ops.append(Decide(now, ready, 0))
    return ops


def kpa(bounds: Bounds, draw: st.DrawFn, metric: str) -> ScalingPolicy:
    return KpaPolicy(KpaConfig(
        bounds=bounds, metric=metric,
        stable_window_s=draw(st.sampled_from([6.0, 60.0, 120.0])),
        panic_window_pct=draw(st.sampled_from([5.0, 10.0, 50.0, 100.0])),
        panic_threshold=draw(st.sampled_from([1.0, 2.0, 3.5])),
        max_scale_up_rate=draw(st.sampled_from([1.5, 2.0, 1000.0])),
        max_scale_down_rate=draw(st.sampled_from([1.0, 2.0, 4.0])),
        initial_replicas=draw(st.integers(0, 6)),
        scale_to_zero_after_s=draw(st.sampled_from([0.0, 30.0, 60.0, 600.0])),
    ))


def keepalive(bounds: Bounds, draw: st.DrawFn) -> ScalingPolicy:
    return FixedKeepAlivePolicy(KeepAliveConfig(bounds, draw(st.sampled_from([0.0, 60.0, 600.0]))))


def hybrid(bounds: Bounds, draw: st.DrawFn) -> ScalingPolicy:
    head = draw(st.sampled_from([0.0, 5.0, 25.0]))
    return HybridHistogramPolicy(HistogramConfig(
        bounds=bounds,
        bin_s=draw(st.sampled_from([10.0, 60.0])),
        range_s=draw(st.sampled_from([600.0, 4 * 3600.0])),
        head_percentile=head,
        tail_percentile=draw(st.sampled_from([head, 90.0, 99.0, 100.0])),
        margin=draw(st.sampled_from([0.0, 0.1, 0.5])),
        cv_threshold=draw(st.sampled_from([0.0, 2.0, 5.0])),
        oob_threshold=draw(st.sampled_from([0.2, 0.5, 1.0])),
        min_samples=draw(st.sampled_from([1, 5, 10])),
        fallback_keepalive_s=draw(st.sampled_from([0.0, 60.0, 600.0])),
    ))


POLICIES: dict[str, Callable[[Bounds, st.DrawFn], ScalingPolicy]] = {
    "kpa": lambda bounds, draw: kpa(bounds, draw, "concurrency"),
    "kpa-rps": lambda bounds, draw: kpa(bounds, draw, "rps"),
    "fixed_keepalive": keepalive,
    "hybrid_histogram": hybrid,
}

CRONS = ["*/15 * * * *", "0 * * * *", "30 23 * * *", "0 9 * * 1-5", "* * * * *"]
ZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"]


@st.composite
def scenarios(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    """Two copies of one policy, one of them wrapped in floors, and what to feed them."""
    min_replicas = draw(st.integers(0, 3))
    max_replicas = min_replicas + draw(st.integers(0, 8))
    bounds = Bounds(min_replicas, max_replicas, draw(st.sampled_from([0.5, 0.7, 1.0, 5.6, 8.0])))
    bare = POLICIES[kind](bounds, draw)
    schedules = draw(st.lists(st.builds(
        Schedule, st.sampled_from(CRONS), st.sampled_from([60.0, 900.0, 7200.0]),
        st.integers(0, 12), st.sampled_from(ZONES)), max_size=3))
    provisioned = draw(st.sampled_from([0, 0, 1, 3, 12]))
    start = T0 + draw(st.integers(0, 365 * 86400))
    ops = draw(st.one_of(free_samples(start), recorded_samples(start), periodic_samples(start)))
    return {"bounds": bounds, "bare": bare, "provisioned": provisioned, "schedules": schedules,
            "ops": ops}


def twin(policy: ScalingPolicy) -> ScalingPolicy:
    """A fresh policy of the same class and config (policies keep all their state on self)."""
    return type(policy)(policy.config)  # type: ignore[attr-defined, call-arg]


@pytest.mark.parametrize("kind", sorted(POLICIES))
@settings(max_examples=60)  # each example is a whole trace: 4 x 60 traces, about a second each kind
@given(data=st.data())
def test_property_every_policy_stays_in_bounds_wakes_on_demand_and_honours_floors(
    kind: str, data: st.DataObject
) -> None:
    scenario = data.draw(scenarios(kind))
    bounds: Bounds = scenario["bounds"]
    bare: ScalingPolicy = scenario["bare"]
    floored = WithFloors(twin(bare), scenario["provisioned"], scenario["schedules"], bounds.max_replicas)
    assert floored.name == bare.name
    latest: MetricSample | None = None
    for op in scenario["ops"]:
        if isinstance(op, Observe):
            bare.observe(op.sample)
            floored.observe(op.sample)
            latest = op.sample
            continue
        counts = ReplicaCounts(op.ready, op.starting)
        inner = bare.decide(op.now, counts)
        decision = floored.decide(op.now, counts)
        floor = min(floored.floor(op.now)[0], bounds.max_replicas)
        for made in (inner, decision):
            assert bounds.min_replicas <= made.desired <= bounds.max_replicas, made
            assert made.reason.strip() and made.mode
            if demand_now(latest) and bounds.max_replicas >= 1:
                assert made.desired >= 1, (latest, made)
        assert decision.desired >= floor
        assert decision.desired == max(inner.desired, floor)
        assert decision.mode == inner.mode
        if decision.desired > inner.desired:
            assert "floor" in decision.reason
