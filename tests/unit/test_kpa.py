"""Unit tests for the kpa policy: stable and panic windows, rate limits, scale-to-zero grace."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stratus.autoscale.kpa import KpaConfig, KpaPolicy
from stratus.autoscale.policy import Bounds, ReplicaCounts, demand_now
from stratus.dispatch.load import LoadRecorder, MetricSample


def make(*, min_replicas: int = 0, max_replicas: int = 100, target: float = 1.0,
         **config: Any) -> KpaPolicy:
    return KpaPolicy(KpaConfig(bounds=Bounds(min_replicas, max_replicas, target), **config))


def load(t: float, concurrency: float, *, interval: float = 1.0, peak: int | None = None,
         arrivals: int | None = None, queued: int = 0) -> MetricSample:
    """A periodic sample: ``concurrency`` on average over ``interval`` seconds ending at ``t``."""
    return MetricSample(
        t=t, interval_s=interval, average_concurrency=concurrency,
        peak_concurrency=math.ceil(concurrency) if peak is None else peak,
        arrivals=math.ceil(concurrency) if arrivals is None else arrivals, queued=queued,
    )


def idle(t: float, interval: float = 1.0) -> MetricSample:
    return MetricSample(t=t, interval_s=interval, average_concurrency=0.0, peak_concurrency=0,
                        arrivals=0, queued=0)


def counts(ready: int, starting: int = 0) -> ReplicaCounts:
    return ReplicaCounts(ready=ready, starting=starting)


# -- windows ------------------------------------------------------------------------------


def test_defaults_follow_knative() -> None:
    config = KpaConfig(bounds=Bounds(0, 10, 1.0))
    assert (config.stable_window_s, config.panic_window_s, config.panic_threshold) == (60.0, 6.0, 2.0)
    assert (config.max_scale_up_rate, config.max_scale_down_rate) == (1000.0, 2.0)
    assert (config.metric, config.initial_replicas, config.scale_to_zero_after_s) == ("concurrency", 0, 60.0)
    assert KpaConfig(bounds=Bounds(0, 1, 1.0), stable_window_s=30.0, panic_window_pct=50).panic_window_s == 15


def test_scale_up_from_zero_on_an_instant_reading_of_64_at_target_8() -> None:
    recorder = LoadRecorder(now=100.0)
    for _ in range(64):
        recorder.enter(100.0)  # all of them wait: there is no replica yet
    policy = make(max_replicas=20, target=8.0)
    policy.observe(recorder.instant(100.0, queued=64, t=5000.0))
    decision = policy.decide(5000.0, counts(0))
    assert decision.desired == 8
    assert decision.mode == "panic"
    assert "panic" in decision.reason


def test_instant_reading_below_the_panic_threshold_still_wakes_one_replica() -> None:
    policy = make(target=8.0)
    policy.observe(MetricSample(t=10.0, interval_s=0.0, average_concurrency=3.0, peak_concurrency=3,
                                arrivals=0, queued=3))
    decision = policy.decide(10.0, counts(0))
    assert (decision.desired, decision.mode) == (1, "stable")


def test_stable_window_average_sets_the_count() -> None:
    policy = make(target=4.0)
    for t in range(1, 61):
        policy.observe(load(float(t), 16.0))
    decision = policy.decide(60.0, counts(4))
    assert (decision.desired, decision.mode) == (4, "stable")
    assert "16.00" in decision.reason


def test_stable_average_is_time_weighted_over_the_window() -> None:
    policy = make(target=1.0)
    policy.observe(load(30.0, 2.0, interval=30.0))  # 2 for 30 s
    policy.observe(load(60.0, 8.0, interval=30.0))  # 8 for 30 s: the panic window sees only this
    decision = policy.decide(60.0, counts(4))
    # 8 over the panic window is 2x the 4 ready: panic follows the panic window.
    assert (decision.desired, decision.mode) == (8, "panic")
    calm = make(target=1.0)
    calm.observe(load(30.0, 2.0, interval=30.0))
    calm.observe(load(60.0, 8.0, interval=30.0))
    assert calm.decide(60.0, counts(5)).desired == 5  # average (2*30 + 8*30) / 60 = 5


def test_samples_older_than_the_stable_window_are_forgotten() -> None:
    policy = make(target=1.0, scale_to_zero_after_s=1000.0)
    for t in range(1, 11):
        policy.observe(load(float(t), 10.0))
    for t in range(11, 80):
        policy.observe(idle(float(t)))
    assert policy.decide(79.0, counts(1)).desired == 1  # only the grace keeps the last one
    assert all(s.t > 79.0 - 60.0 for s in policy.samples)


# -- panic --------------------------------------------------------------------------------


@pytest.mark.parametrize(("concurrency", "ready", "panics"),
                         [(3.0, 2, False), (4.0, 2, True), (5.0, 2, True), (1.0, 0, False), (2.0, 0, True),
                          (19.0, 10, False), (20.0, 10, True)])
def test_panic_starts_at_twice_the_ready_replicas(concurrency: float, ready: int, panics: bool) -> None:
    policy = make(target=1.0)
    for t in range(1, 61):
        policy.observe(load(float(t), concurrency))
    assert (policy.decide(60.0, counts(ready)).mode == "panic") is panics


def test_panic_holds_its_peak_and_ends_a_stable_window_after_the_last_burst() -> None:
    policy = make(target=1.0, scale_to_zero_after_s=10_000.0)
    for t in range(1, 61):
        policy.observe(load(float(t), 2.0))
    assert policy.decide(60.0, counts(2)).mode == "stable"
    for t in range(61, 67):
        policy.observe(load(float(t), 12.0))  # a burst: 6x the ready replicas
    burst = policy.decide(66.0, counts(2))
    assert (burst.desired, burst.mode) == (12, "panic")
    ready = 12
    for t in range(67, 200):
        policy.observe(load(float(t), 2.0))  # the burst is over at once
        decision = policy.decide(float(t), counts(ready))
        if t < 66 + 60:
            assert (decision.desired, decision.mode) == (12, "panic"), t  # no scale-down in panic
        else:
            assert decision.mode == "stable", t
            assert decision.desired < 12, t
            ready = decision.desired
    assert ready == 2  # back to the stable average, halving at most per decision


def test_a_new_burst_extends_the_panic() -> None:
    policy = make(target=1.0, stable_window_s=60.0, scale_to_zero_after_s=10_000.0)
    policy.observe(load(1.0, 10.0))
    assert policy.decide(1.0, counts(1)).mode == "panic"
    policy.observe(load(50.0, 10.0, interval=6.0))
    assert policy.decide(50.0, counts(1)).mode == "panic"  # a second burst at t=50
    policy.observe(load(100.0, 1.0, interval=6.0))
    assert policy.decide(100.0, counts(10)).mode == "panic"  # 50 s after the second: still panic
    policy.observe(load(110.0, 1.0, interval=6.0))
    assert policy.decide(110.0, counts(10)).mode == "stable"  # 60 s after it: over


def test_panic_desired_starts_afresh_with_each_panic() -> None:
    policy = make(target=1.0, scale_to_zero_after_s=10_000.0)
    policy.observe(load(1.0, 40.0))
    assert policy.decide(1.0, counts(1)).desired == 40
    policy.observe(load(100.0, 1.0, interval=6.0))
    assert policy.decide(100.0, counts(40)).mode == "stable"
    policy.observe(load(200.0, 4.0, interval=6.0))
    second = policy.decide(200.0, counts(1))
    assert (second.desired, second.mode) == (4, "panic")  # not the 40 of the first panic


def test_entering_panic_never_asks_for_fewer_than_the_stable_window() -> None:
    policy = make(target=1.0)
    for t in range(1, 51):
        policy.observe(load(float(t), 12.0))
    for t in range(51, 60):
        policy.observe(load(float(t), 1.0))
    before = policy.decide(59.0, counts(2, starting=9))
    assert (before.desired, before.mode) == (11, "stable")  # scaling 2 -> 11 on the stable window
    policy.observe(load(60.0, 25.0))  # a burst: the panic window asks for 5, 2.5x the ready
    during = policy.decide(60.0, counts(2, starting=9))
    assert during.mode == "panic"
    assert during.desired >= before.desired  # "never scale down in panic": not 11 -> 5


def test_a_burst_panics_even_when_the_scale_up_rate_is_below_the_threshold() -> None:
    policy = make(target=1.0, max_scale_up_rate=1.5)
    for t in range(1, 61):
        policy.observe(load(float(t), 10.0))
    assert policy.decide(60.0, counts(10)).mode == "stable"
    for t in range(61, 67):
        policy.observe(load(float(t), 100.0))  # 10x the ready replicas
    assert policy.decide(66.0, counts(10)).mode == "panic"


def test_no_load_never_panics() -> None:
    policy = make(target=1.0, panic_threshold=1.0, max_scale_down_rate=1.0, scale_to_zero_after_s=1e9)
    policy.observe(load(1.0, 1.0))
    for t in range(2, 200):
        policy.observe(idle(float(t)))
    assert policy.decide(199.0, counts(5)).mode == "stable"


# -- rate limits ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "ready", "expected"),
    [(1000.0, 0, 100), (2.0, 0, 2), (2.0, 1, 2), (2.0, 3, 6), (1.5, 3, 5), (10.0, 4, 40)],
)
def test_scale_up_rate_bounds_each_step(rate: float, ready: int, expected: int) -> None:
    policy = make(target=1.0, max_replicas=1000, max_scale_up_rate=rate)
    for t in range(1, 61):
        policy.observe(load(float(t), 100.0))
    assert policy.decide(60.0, counts(ready)).desired == expected


def test_scale_down_rate_halves_at_most_per_decision() -> None:
    policy = make(target=1.0, scale_to_zero_after_s=10_000.0)
    policy.observe(load(1.0, 1.0))  # some activity, then none
    steps = []
    ready = 10
    for t in range(70, 76):
        policy.observe(idle(float(t)))
        ready = policy.decide(float(t), counts(ready)).desired
        steps.append(ready)
    assert steps == [5, 2, 1, 1, 1, 1]  # the grace keeps the last one


@pytest.mark.parametrize(("rate", "expected"), [(1.0, 8), (2.0, 4), (4.0, 2), (100.0, 1)])
def test_scale_down_rate_keeps_ready_over_rate(rate: float, expected: int) -> None:
    policy = make(target=1.0, max_scale_down_rate=rate, scale_to_zero_after_s=10_000.0)
    policy.observe(load(1.0, 1.0))
    policy.observe(idle(70.0))
    assert policy.decide(70.0, counts(8)).desired == expected


# -- scale to zero ----------------------------------------------------------------------------


def test_scale_to_zero_after_the_grace_period_only() -> None:
    # A short stable window: the windows forget the request long before the grace ends.
    policy = make(target=1.0, stable_window_s=10.0, scale_to_zero_after_s=60.0)
    policy.observe(load(10.0, 1.0, interval=10.0))
    assert policy.decide(10.0, counts(0)).desired == 1
    for t in range(20, 100, 10):
        policy.observe(idle(float(t), interval=10.0))
        decision = policy.decide(float(t), counts(1))
        if t < 70:
            assert decision.desired == 1, t
            assert "grace" in decision.reason
        else:
            assert (decision.desired, decision.mode) == (0, "stable"), t
            assert "scale to zero" in decision.reason


def test_grace_keeps_a_starting_replica_but_does_not_start_one() -> None:
    policy = make(target=1.0, stable_window_s=5.0)
    policy.observe(load(10.0, 1.0))
    policy.observe(idle(20.0))
    assert policy.decide(20.0, counts(0, starting=1)).desired == 1
    assert policy.decide(20.0, counts(0, starting=0)).desired == 0


def test_zero_grace_scales_to_zero_as_soon_as_nothing_runs() -> None:
    policy = make(target=1.0, scale_to_zero_after_s=0.0)
    for t in range(1, 31):
        policy.observe(load(float(t), 5.0))
    assert policy.decide(30.0, counts(5)).desired == 5
    policy.observe(idle(31.0))
    assert policy.decide(31.0, counts(5)).desired == 0


def test_min_replicas_wins_over_scale_to_zero() -> None:
    policy = make(min_replicas=2, target=1.0, scale_to_zero_after_s=10.0)
    policy.observe(load(1.0, 1.0))
    policy.observe(idle(100.0))
    decision = policy.decide(100.0, counts(1))
    assert decision.desired == 2
    assert "clamped to [2, 100]" in decision.reason


def test_a_waiting_request_wakes_a_deployment_at_zero() -> None:
    policy = make(target=10.0, scale_to_zero_after_s=30.0)
    policy.observe(load(1.0, 1.0))
    policy.observe(idle(500.0))
    assert policy.decide(500.0, counts(0)).desired == 0
    policy.observe(MetricSample(t=501.0, interval_s=0.0, average_concurrency=1.0, peak_concurrency=1,
                                arrivals=0, queued=1))
    assert policy.decide(501.0, counts(0)).desired == 1


# -- initial replicas -----------------------------------------------------------------------


def test_initial_replicas_hold_for_the_first_window_without_requests() -> None:
    policy = make(target=1.0, initial_replicas=3)
    policy.observe(idle(1000.0))
    for now in (1000.0, 1030.0, 1059.9):
        decision = policy.decide(now, counts(0))
        assert decision.desired == 3, now
        assert "initial_replicas=3" in decision.reason
    assert policy.decide(1060.0, counts(0)).desired == 0


def test_initial_replicas_give_way_to_the_load_once_requests_come() -> None:
    policy = make(target=1.0, initial_replicas=3)
    policy.observe(idle(1000.0))
    policy.observe(load(1001.0, 1.0))
    decision = policy.decide(1001.0, counts(0))
    assert decision.desired == 1
    assert "initial_replicas" not in decision.reason


def test_initial_replicas_are_capped_by_max_replicas() -> None:
    policy = make(max_replicas=2, target=1.0, initial_replicas=5)
    policy.observe(idle(0.0))
    assert policy.decide(0.0, counts(0)).desired == 2


# -- the rps metric -----------------------------------------------------------------------------


def test_rps_metric_counts_arrivals_per_second() -> None:
    policy = make(target=5.0, metric="rps")
    for t in range(10, 70, 10):
        # 100 requests per 10 s = 10 rps; at most one in flight at a time.
        policy.observe(load(float(t), 0.5, interval=10.0, peak=1, arrivals=100))
    decision = policy.decide(60.0, counts(2))
    assert (decision.desired, decision.mode) == (2, "stable")
    assert "rps 10.00" in decision.reason


def test_rps_metric_ignores_concurrency_and_instant_readings() -> None:
    policy = make(target=5.0, metric="rps")
    for t in range(10, 70, 10):
        policy.observe(load(float(t), 40.0, interval=10.0, peak=40, arrivals=50))  # 5 rps, slow requests
    policy.observe(MetricSample(t=60.0, interval_s=0.0, average_concurrency=90.0, peak_concurrency=90,
                                arrivals=0, queued=50))
    decision = policy.decide(60.0, counts(1))
    assert (decision.desired, decision.mode) == (1, "stable")


# -- properties -----------------------------------------------------------------------------------


@st.composite
def kpa_runs(draw: st.DrawFn) -> dict[str, Any]:
    """Whole-number loads and times, so the test's own window sums are exact."""
    min_replicas = draw(st.integers(0, 2))
    threshold = draw(st.sampled_from([1.0, 1.5, 2.0, 3.0]))
    config = KpaConfig(
        bounds=Bounds(min_replicas, min_replicas + draw(st.integers(1, 30)),
                      draw(st.sampled_from([0.5, 1.0, 2.0, 4.0]))),
        metric=draw(st.sampled_from(["concurrency", "rps"])),
        stable_window_s=draw(st.sampled_from([10.0, 20.0, 60.0])),
        panic_window_pct=draw(st.sampled_from([10.0, 50.0])),
        panic_threshold=threshold,
        # Rates that cannot hide a burst or fake one (the rate tests above cover those).
        max_scale_up_rate=draw(st.sampled_from([max(threshold, 1.5), 2 * threshold, 1000.0])),
        max_scale_down_rate=draw(st.sampled_from([2.0, 4.0] if threshold == 1.0 else [1.0, 2.0, 4.0])),
        initial_replicas=draw(st.sampled_from([0, 0, 2])),
        scale_to_zero_after_s=draw(st.sampled_from([0.0, 10.0, 60.0, 600.0])),
    )
    steps = draw(st.lists(st.tuples(
        st.sampled_from([0, 1, 1, 2, 5, 20]),  # seconds since the previous step
        st.booleans(),  # an instant reading
        st.integers(0, 40) | st.sampled_from([0, 0, 1]),  # concurrency
        st.integers(0, 2),  # peak above it
        st.integers(0, 50),  # arrivals
        st.sampled_from([0, 0, 0, 3]),  # queued
        st.integers(0, 16),  # ready
    ), min_size=5, max_size=60))
    return {"config": config, "steps": steps}


@settings(max_examples=150)
@given(run=kpa_runs())
def test_property_panic_enters_on_a_burst_leaves_a_window_later_and_never_scales_down(
    run: dict[str, Any]
) -> None:
    config: KpaConfig = run["config"]
    bounds = config.bounds
    policy = KpaPolicy(config)
    periodic: list[MetricSample] = []
    latest: MetricSample | None = None
    last_active: float | None = None
    last_burst: float | None = None
    previous_panic: int | None = None  # the last desired count of the current panic
    now = 1_000.0
    for dt, instant, concurrency, above, arrivals, queued, ready in run["steps"]:
        now += dt
        latest = MetricSample(t=now, interval_s=0.0 if instant else float(max(dt, 1)),
                              average_concurrency=float(concurrency), peak_concurrency=concurrency + above,
                              arrivals=0 if instant else arrivals, queued=queued)
        policy.observe(latest)
        if not instant:
            periodic.append(latest)
        if latest.active:
            last_active = now
        decision = policy.decide(now, counts(ready))

        # The test's own reading of the panic window, from the samples it made.
        in_window = [s for s in periodic if s.t > now - config.panic_window_s]
        covered = sum(s.interval_s for s in in_window)
        total = sum(s.arrivals if config.metric == "rps" else s.average_concurrency * s.interval_s
                    for s in in_window)
        panic_load = total / covered if covered else 0.0
        if instant and config.metric == "concurrency":
            panic_load = max(panic_load, float(latest.peak_concurrency))
        base = max(1, ready)
        wanted = bounds.replicas_for(panic_load)
        burst = wanted >= config.panic_threshold * base  # demand over the panic window vs the ready ones
        was_panicking = last_burst is not None and now - last_burst < config.stable_window_s
        if burst:
            last_burst = now
        panicking = burst or was_panicking
        if not panicking:
            previous_panic = None
        zeroed = (not demand_now(latest) and last_active is not None
                  and now - last_active >= config.scale_to_zero_after_s)

        assert bounds.min_replicas <= decision.desired <= bounds.max_replicas
        if demand_now(latest):
            assert decision.desired >= 1
        assert (decision.mode == "panic") is (panicking and not zeroed), (now, decision, wanted, base)
        if decision.mode == "panic":
            most = math.ceil(config.max_scale_up_rate * base)
            assert decision.desired >= min(wanted, most, bounds.max_replicas)
            if previous_panic is not None:
                assert decision.desired >= previous_panic, "scaled down in panic"
            previous_panic = decision.desired
        if zeroed:
            assert decision.desired == bounds.min_replicas
