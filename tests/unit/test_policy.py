"""Unit tests for the idle-timeout autoscaling policy, driven by a fake clock."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stratus.control.metrics import MetricSample
from stratus.control.policy import (
    Decision,
    IdleTimeoutConfig,
    IdleTimeoutPolicy,
    ReplicaCounts,
)

COUNTS = ReplicaCounts(ready=0, starting=0)


def make_policy(
    *, min_replicas: int = 0, max_replicas: int = 10, target: float = 2.0, window: float = 60.0
) -> IdleTimeoutPolicy:
    return IdleTimeoutPolicy(
        IdleTimeoutConfig(
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            target_concurrency=target,
            scale_to_zero_after_s=window,
        )
    )


def sample(
    t: float, *, peak: int = 0, arrivals: int = 0, queued: int = 0, interval: float = 10.0
) -> MetricSample:
    return MetricSample(
        t=t,
        interval_s=interval,
        average_concurrency=float(peak),
        peak_concurrency=peak,
        arrivals=arrivals,
        queued=queued,
    )


def test_no_requests_yet_holds_min_replicas() -> None:
    policy = make_policy(min_replicas=0)
    decision = policy.decide(0.0, COUNTS)
    assert decision.desired == 0
    assert "no requests yet" in decision.reason
    assert make_policy(min_replicas=2).decide(0.0, COUNTS).desired == 2


def test_idle_samples_before_any_request_still_hold_min_replicas() -> None:
    policy = make_policy(min_replicas=1)
    for t in (10.0, 20.0, 30.0):
        policy.observe(sample(t))
    decision = policy.decide(30.0, COUNTS)
    assert decision == Decision(desired=1, reason=decision.reason)
    assert "no requests yet" in decision.reason
    assert policy.last_active is None


@pytest.mark.parametrize(
    ("peak", "target", "expected"),
    [(1, 2.0, 1), (2, 2.0, 1), (3, 2.0, 2), (5, 2.0, 3), (7, 7.0, 1), (8, 7.0, 2), (1, 0.5, 2)],
)
def test_desired_is_peak_over_target_rounded_up(peak: int, target: float, expected: int) -> None:
    policy = make_policy(target=target, max_replicas=100)
    policy.observe(sample(10.0, peak=peak, arrivals=peak))
    decision = policy.decide(10.0, COUNTS)
    assert decision.desired == expected
    assert f"peak concurrency {peak}" in decision.reason


def test_desired_uses_the_peak_over_the_whole_window() -> None:
    policy = make_policy(target=1.0, window=60.0)
    policy.observe(sample(10.0, peak=6, arrivals=6))
    policy.observe(sample(20.0, peak=2, arrivals=1))
    policy.observe(sample(30.0, peak=1))
    assert policy.decide(30.0, COUNTS).desired == 6  # the burst at t=10 is still in the window
    # Once the burst's sample leaves the window, the lower peaks decide.
    assert policy.decide(71.0, COUNTS).desired == 2
    assert policy.decide(81.0, COUNTS).desired == 1


def test_clamped_to_max_replicas_with_a_reason() -> None:
    policy = make_policy(max_replicas=3, target=1.0)
    policy.observe(sample(1.0, peak=50, arrivals=50))
    decision = policy.decide(1.0, COUNTS)
    assert decision.desired == 3
    assert "clamped to [0, 3]" in decision.reason


def test_clamped_up_to_min_replicas_with_a_reason() -> None:
    policy = make_policy(min_replicas=4, max_replicas=10, target=5.0)
    policy.observe(sample(1.0, peak=1, arrivals=1))
    decision = policy.decide(1.0, COUNTS)
    assert decision.desired == 4
    assert "clamped to [4, 10]" in decision.reason


def test_no_clamp_note_when_within_bounds() -> None:
    policy = make_policy(min_replicas=1, max_replicas=10, target=1.0)
    policy.observe(sample(1.0, peak=3, arrivals=3))
    decision = policy.decide(1.0, COUNTS)
    assert decision.desired == 3
    assert "clamped" not in decision.reason


def test_scales_to_min_only_after_a_whole_window_without_requests() -> None:
    policy = make_policy(min_replicas=0, target=2.0, window=60.0)
    policy.observe(sample(0.0, peak=4, arrivals=4))
    for t in range(10, 130, 10):
        policy.observe(sample(float(t)))  # idle samples keep arriving
        decision = policy.decide(float(t), COUNTS)
        if t <= 60:
            assert decision.desired == 2, t  # the burst still counts within the window
        else:
            assert decision.desired == 0, t
            assert "idle for" in decision.reason
            assert "holding min_replicas=0" in decision.reason


def test_scale_down_goes_to_min_replicas_not_zero() -> None:
    policy = make_policy(min_replicas=2, target=1.0, window=30.0)
    policy.observe(sample(0.0, peak=8, arrivals=8))
    assert policy.decide(0.0, COUNTS).desired == 8
    decision = policy.decide(100.0, COUNTS)
    assert decision.desired == 2
    assert "idle for 100s >= 30s" in decision.reason


def test_at_least_one_replica_while_a_request_is_waiting() -> None:
    # An instant reading (interval 0) from the activator: nothing executes, one waits.
    policy = make_policy(min_replicas=0, target=100.0, window=60.0)
    policy.observe(sample(5.0, queued=1, interval=0.0))
    decision = policy.decide(5.0, COUNTS)
    assert decision.desired == 1
    assert decision.reason


def test_waiting_request_after_a_long_idle_period_wakes_the_deployment() -> None:
    policy = make_policy(min_replicas=0, target=4.0, window=60.0)
    policy.observe(sample(0.0, peak=1, arrivals=1))
    assert policy.decide(500.0, COUNTS).desired == 0
    policy.observe(sample(500.0, queued=1, interval=0.0))
    assert policy.decide(500.0, COUNTS).desired == 1


def test_waiting_requests_are_capped_by_max_replicas() -> None:
    policy = make_policy(min_replicas=0, max_replicas=0, target=1.0)
    policy.observe(sample(1.0, queued=3, interval=0.0))
    decision = policy.decide(1.0, COUNTS)
    assert decision.desired == 0
    assert "clamped" in decision.reason


def test_old_samples_are_dropped_from_the_window() -> None:
    policy = make_policy(window=20.0)
    for t in range(0, 100, 10):
        policy.observe(sample(float(t), peak=1, arrivals=1))
    policy.decide(100.0, COUNTS)
    assert [s.t for s in policy.samples] == [80.0, 90.0]


def test_zero_window_still_starts_a_replica_for_a_waiting_request() -> None:
    policy = make_policy(min_replicas=0, target=1.0, window=0.0)
    policy.observe(sample(5.0, queued=1, interval=0.0))
    assert policy.decide(5.0, COUNTS).desired >= 1


sample_strategy = st.builds(
    lambda dt, peak, arrivals, queued: (dt, peak, arrivals, queued),
    st.floats(min_value=0.0, max_value=30.0, allow_nan=False),
    st.integers(min_value=0, max_value=40),
    st.integers(min_value=0, max_value=40),
    st.integers(min_value=0, max_value=40),
)


@given(
    min_replicas=st.integers(min_value=0, max_value=5),
    extra=st.integers(min_value=0, max_value=10),
    target=st.floats(min_value=0.1, max_value=50.0, allow_nan=False),
    window=st.floats(min_value=0.5, max_value=120.0, allow_nan=False),
    steps=st.lists(sample_strategy, max_size=25),
    later=st.floats(min_value=0.0, max_value=300.0, allow_nan=False),
)
def test_property_decisions_are_bounded_explained_and_wake_on_demand(
    min_replicas: int,
    extra: int,
    target: float,
    window: float,
    steps: list[tuple[float, int, int, int]],
    later: float,
) -> None:
    max_replicas = min_replicas + extra
    policy = make_policy(
        min_replicas=min_replicas, max_replicas=max_replicas, target=target, window=window
    )
    now = 0.0
    for dt, peak, arrivals, queued in steps:
        now += dt
        policy.observe(sample(now, peak=peak, arrivals=arrivals, queued=queued))
        decision = policy.decide(now, COUNTS)
        assert min_replicas <= decision.desired <= max_replicas
        assert decision.reason.strip()
        if (peak or queued) and max_replicas >= 1:
            assert decision.desired >= 1
        in_window = [s.peak_concurrency for s in policy.samples]
        wanted = math.ceil(max(in_window, default=0) / target)
        assert decision.desired >= min(max(wanted, min_replicas), max_replicas)
    final = policy.decide(now + later, COUNTS)
    assert min_replicas <= final.desired <= max_replicas
    assert final.reason.strip()
