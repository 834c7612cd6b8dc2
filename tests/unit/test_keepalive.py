"""Unit tests for the fixed_keepalive policy (the old idle timeout), driven by a fake clock."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stratus.autoscale.keepalive import FixedKeepAlivePolicy, KeepAliveConfig
from stratus.autoscale.policy import Bounds, ReplicaCounts
from stratus.dispatch.load import LoadRecorder, MetricSample

COUNTS = ReplicaCounts(ready=0, starting=0)


def make_policy(*, min_replicas: int = 0, max_replicas: int = 10, target: float = 2.0,
                keepalive: float = 60.0) -> FixedKeepAlivePolicy:
    return FixedKeepAlivePolicy(KeepAliveConfig(Bounds(min_replicas, max_replicas, target), keepalive))


def sample(t: float, *, peak: int = 0, arrivals: int = 0, queued: int = 0,
           interval: float = 10.0) -> MetricSample:
    return MetricSample(t=t, interval_s=interval, average_concurrency=float(peak),
                        peak_concurrency=peak, arrivals=arrivals, queued=queued)


def test_default_keepalive_is_ten_minutes() -> None:
    assert KeepAliveConfig(Bounds(0, 1, 1.0)).keepalive_s == 600.0
    assert make_policy().name == "fixed_keepalive"


def test_no_requests_yet_holds_min_replicas() -> None:
    decision = make_policy(min_replicas=0).decide(0.0, COUNTS)
    assert (decision.desired, decision.mode) == (0, "idle")
    assert "no requests yet" in decision.reason
    assert make_policy(min_replicas=2).decide(0.0, COUNTS).desired == 2


def test_idle_samples_before_any_request_still_hold_min_replicas() -> None:
    policy = make_policy(min_replicas=1)
    for t in (10.0, 20.0, 30.0):
        policy.observe(sample(t))
    decision = policy.decide(30.0, COUNTS)
    assert (decision.desired, decision.mode) == (1, "idle")
    assert "no requests yet" in decision.reason
    assert policy.last_active is None
    assert not policy.needed  # idle samples are not kept


@pytest.mark.parametrize(
    ("peak", "target", "expected"),
    [(1, 2.0, 1), (2, 2.0, 1), (3, 2.0, 2), (5, 2.0, 3), (7, 7.0, 1), (8, 7.0, 2), (1, 0.5, 2)],
)
def test_desired_is_peak_over_target_rounded_up(peak: int, target: float, expected: int) -> None:
    policy = make_policy(target=target, max_replicas=100)
    policy.observe(sample(10.0, peak=peak, arrivals=peak))
    decision = policy.decide(10.0, COUNTS)
    assert (decision.desired, decision.mode) == (expected, "active")
    assert f"peak concurrency {peak}" in decision.reason


def test_desired_uses_the_peak_over_the_whole_keepalive() -> None:
    policy = make_policy(target=1.0, keepalive=60.0)
    policy.observe(sample(10.0, peak=6, arrivals=6))
    policy.observe(sample(20.0, peak=2, arrivals=1))
    policy.observe(sample(30.0, peak=1))
    assert policy.decide(30.0, COUNTS).desired == 6  # the burst at t=10 is still kept alive
    # Once the burst's sample is older than the keep-alive, the lower peaks decide.
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


def test_holds_the_replica_exactly_keepalive_s_after_it_was_last_needed() -> None:
    policy = make_policy(target=1.0, keepalive=600.0)
    policy.observe(sample(100.0, peak=1, arrivals=1))
    assert policy.decide(100.0, COUNTS).mode == "active"
    for t in range(110, 800, 10):
        policy.observe(sample(float(t)))  # idle samples keep coming
        decision = policy.decide(float(t), COUNTS)
        if t <= 700:
            assert (decision.desired, decision.mode) == (1, "keepalive"), t
        else:
            assert (decision.desired, decision.mode) == (0, "idle"), t
            assert "keep-alive 600s" in decision.reason
    fresh = make_policy(target=1.0, keepalive=600.0)
    fresh.observe(sample(100.0, peak=1, arrivals=1))
    fresh.observe(sample(110.0))
    assert fresh.decide(700.0, COUNTS).desired == 1  # the boundary itself is still warm
    assert fresh.decide(math.nextafter(700.0, math.inf), COUNTS).desired == 0


def test_the_latest_sample_showing_demand_keeps_a_replica_however_old() -> None:
    # Policies trust the latest reading: until a fresh sample says otherwise, the request
    # it saw may still be running.
    policy = make_policy(target=1.0, keepalive=60.0)
    policy.observe(sample(0.0, peak=1, arrivals=1))
    assert policy.decide(500.0, COUNTS).desired == 1
    policy.observe(sample(500.0))
    assert policy.decide(500.0, COUNTS).desired == 0


def test_keepalive_counts_from_the_end_of_the_last_request() -> None:
    # The request ends at 3 s; the sample at 10 s reports it and how long it has been idle,
    # so the keep-alive runs from 3 s, not from the sample.
    recorder = LoadRecorder(now=0.0)
    recorder.enter(1.0)
    recorder.leave(3.0)
    policy = make_policy(target=1.0, keepalive=60.0)
    policy.observe(recorder.sample(10.0, queued=0))
    policy.observe(recorder.sample(20.0, queued=0))
    assert policy.decide(62.9, COUNTS).desired == 1
    assert policy.decide(63.1, COUNTS).desired == 0


def test_each_replica_stays_for_the_keepalive_after_the_level_that_needed_it() -> None:
    # Two requests overlap until 4 s, one runs on until 9 s; the sample at 10 s saw a peak of
    # 2. The second replica was last needed at 4 s, the first at 9 s: dating both by the
    # interval's end (or its last busy moment) kept a replica up to a tick too long, and
    # that is what kept the simulator a tick behind the live controller when a request
    # ended on a tick boundary.
    recorder = LoadRecorder(now=0.0)
    recorder.enter(1.0)
    recorder.enter(2.0)
    recorder.leave(4.0)
    recorder.leave(9.0)
    reading = recorder.sample(10.0, queued=0)
    assert (reading.peak_concurrency, reading.levels_ago_s, reading.last_busy) == (2, (1.0, 6.0), 9.0)
    policy = make_policy(target=1.0, keepalive=60.0)
    policy.observe(reading)
    policy.observe(recorder.sample(11.0, queued=0))  # nothing ran since
    assert policy.decide(63.9, COUNTS).desired == 2
    assert policy.decide(64.1, COUNTS).desired == 1
    assert policy.decide(68.9, COUNTS).desired == 1
    assert policy.decide(69.1, COUNTS).desired == 0


def test_levels_still_held_at_the_sample_are_dated_by_the_sample() -> None:
    recorder = LoadRecorder(now=0.0)
    recorder.enter(1.0)
    recorder.enter(2.0)
    recorder.enter(2.5)
    recorder.leave(3.0)
    recorder.leave(3.5)
    recorder.enter(5.0)  # back at 2, and still there at 10 s; 3 was last reached at 3 s
    assert recorder.sample(10.0, queued=0).levels_ago_s == (0.0, 0.0, 7.0)
    recorder.leave(12.0)
    recorder.leave(13.0)
    later = recorder.sample(20.0, queued=0)
    assert later.levels_ago_s == (7.0, 8.0), "the levels carried over ended at 13 and 12 s"
    assert recorder.sample(30.0, queued=0).levels_ago_s == ()


def test_a_sample_without_levels_dates_them_by_its_last_busy_moment() -> None:
    reading = MetricSample(t=10.0, interval_s=10.0, average_concurrency=1.0, peak_concurrency=3,
                           arrivals=3, queued=0, idle_for_s=2.0)
    assert reading.levels_at_ago() == (2.0, 2.0, 2.0)


def test_scale_down_goes_to_min_replicas_not_zero() -> None:
    policy = make_policy(min_replicas=2, target=1.0, keepalive=30.0)
    policy.observe(sample(0.0, peak=8, arrivals=8))
    assert policy.decide(0.0, COUNTS).desired == 8
    policy.observe(sample(10.0))
    decision = policy.decide(100.0, COUNTS)
    assert decision.desired == 2
    assert "idle 100s >= keep-alive 30s" in decision.reason


def test_at_least_one_replica_while_a_request_is_waiting() -> None:
    # An instant reading (interval 0) from the activator: nothing executes, one waits.
    policy = make_policy(min_replicas=0, target=100.0, keepalive=60.0)
    policy.observe(sample(5.0, queued=1, interval=0.0))
    decision = policy.decide(5.0, COUNTS)
    assert (decision.desired, decision.mode) == (1, "active")


def test_waiting_request_after_a_long_idle_period_wakes_the_deployment() -> None:
    policy = make_policy(min_replicas=0, target=4.0, keepalive=60.0)
    policy.observe(sample(0.0, peak=1, arrivals=1))
    policy.observe(sample(10.0))
    assert policy.decide(500.0, COUNTS).desired == 0
    policy.observe(sample(500.0, queued=1, interval=0.0))
    assert policy.decide(500.0, COUNTS).desired == 1


def test_waiting_requests_are_capped_by_max_replicas() -> None:
    policy = make_policy(min_replicas=0, max_replicas=0, target=1.0)
    policy.observe(sample(1.0, queued=3, interval=0.0))
    decision = policy.decide(1.0, COUNTS)
    assert decision.desired == 0
    assert "clamped" in decision.reason


def test_old_peaks_are_dropped_from_the_window() -> None:
    policy = make_policy(keepalive=20.0)
    for t, peak in ((0, 5), (10, 3), (20, 1), (30, 2), (40, 1)):
        policy.observe(sample(float(t), peak=peak, arrivals=1))
    # When each level was last reached: one entry per level, never a list of samples.
    assert policy.needed == [40.0, 30.0, 10.0, 0.0, 0.0]
    assert "peak concurrency 2 " in policy.decide(45.0, COUNTS).reason  # 3 was at 10 s
    assert policy.needed == [40.0, 30.0]
    policy.decide(55.0, COUNTS)
    assert policy.needed == [40.0]


def test_zero_keepalive_still_starts_a_replica_for_a_waiting_request() -> None:
    policy = make_policy(min_replicas=0, target=1.0, keepalive=0.0)
    policy.observe(sample(5.0, queued=1, interval=0.0))
    assert policy.decide(5.0, COUNTS).desired == 1
    policy.observe(sample(6.0, interval=1.0))
    assert policy.decide(6.0, COUNTS).desired == 0


steps_strategy = st.lists(st.tuples(
    st.floats(min_value=0.0, max_value=30.0),
    st.integers(min_value=0, max_value=40),
    st.integers(min_value=0, max_value=40),
    st.integers(min_value=0, max_value=40),
), max_size=25)


@given(
    min_replicas=st.integers(min_value=0, max_value=5),
    extra=st.integers(min_value=0, max_value=10),
    target=st.floats(min_value=0.1, max_value=50.0),
    keepalive=st.floats(min_value=0.0, max_value=120.0),
    steps=steps_strategy,
    later=st.floats(min_value=0.0, max_value=300.0),
)
def test_property_keeps_the_peak_of_the_keepalive_window(
    min_replicas: int, extra: int, target: float, keepalive: float,
    steps: list[tuple[float, int, int, int]], later: float,
) -> None:
    max_replicas = min_replicas + extra
    policy = make_policy(min_replicas=min_replicas, max_replicas=max_replicas, target=target,
                         keepalive=keepalive)
    seen: list[tuple[float, int]] = []
    now = 0.0
    for dt, peak, arrivals, queued in steps:
        now += dt
        policy.observe(sample(now, peak=peak, arrivals=arrivals, queued=queued))
        seen.append((now, peak))
        decision = policy.decide(now, COUNTS)
        assert min_replicas <= decision.desired <= max_replicas
        assert decision.reason.strip()
        if (peak or queued) and max_replicas >= 1:
            assert decision.desired >= 1
        kept = max((p for t, p in seen if t >= now - keepalive), default=0)
        expected = Bounds(min_replicas, max_replicas, target).replicas_for(kept)
        if peak or queued:
            expected = max(expected, 1)
        assert decision.desired == min(max(expected, min_replicas), max_replicas)
    final = policy.decide(now + later, COUNTS)
    assert min_replicas <= final.desired <= max_replicas
