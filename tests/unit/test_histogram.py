"""Unit tests for the hybrid_histogram policy (Shahrad et al., ATC'20) and its idle-time histogram."""

from __future__ import annotations

import math
from typing import Any

import pytest

from stratus.autoscale.histogram import HistogramConfig, HybridHistogramPolicy, IdleTimeHistogram
from stratus.autoscale.policy import Bounds, Decision, ReplicaCounts
from stratus.dispatch.load import LoadRecorder, MetricSample

COUNTS = ReplicaCounts(ready=1, starting=0)


def make(*, min_replicas: int = 0, max_replicas: int = 10, target: float = 1.0,
         **config: Any) -> HybridHistogramPolicy:
    return HybridHistogramPolicy(HistogramConfig(bounds=Bounds(min_replicas, max_replicas, target), **config))


def histogram(counts: dict[int, int], bins: int = 10, bin_s: float = 60.0) -> IdleTimeHistogram:
    result = IdleTimeHistogram(bins, bin_s)
    for index, count in counts.items():
        for _ in range(count):
            result.add(index * bin_s + bin_s / 2)
    return result


def run(policy: HybridHistogramPolicy, arrivals: list[float], *, until: float, tick: float = 10.0,
        duration: float = 1.0, width: int = 1) -> list[tuple[float, Decision]]:
    """Requests of ``duration`` s (``width`` at once) at ``arrivals``, through a LoadRecorder
    sampled every ``tick`` s; the policy decides after every sample."""
    events = sorted([(at, 1) for at in arrivals for _ in range(width)]
                    + [(at + duration, -1) for at in arrivals for _ in range(width)],
                    key=lambda event: (event[0], -event[1]))
    recorder = LoadRecorder(0.0)
    decisions = []
    now = 0.0
    while now < until:
        now += tick
        while events and events[0][0] <= now:
            at, step = events.pop(0)
            if step > 0:
                recorder.enter(at)
            else:
                recorder.leave(at)
        policy.observe(recorder.sample(now, queued=0))
        decisions.append((now, policy.decide(now, COUNTS)))
    return decisions


def between(decisions: list[tuple[float, Decision]], start: float, end: float) -> list[Decision]:
    return [decision for t, decision in decisions if start <= t < end]


# -- the histogram --------------------------------------------------------------------------


def test_idle_times_fall_into_fixed_width_bins_and_the_rest_out_of_range() -> None:
    h = IdleTimeHistogram(bins=10, bin_s=60.0)
    for idle in (0.0, 59.999, 60.0, 599.9, 600.0, 10_000.0):
        h.add(idle)
    assert h.counts == [2, 1, 0, 0, 0, 0, 0, 0, 0, 1]
    assert (h.total, h.out_of_range) == (4, 2)
    assert h.out_of_range_share() == pytest.approx(2 / 6)


def test_empty_histogram_has_no_share_and_no_variation() -> None:
    h = IdleTimeHistogram(bins=10, bin_s=60.0)
    assert h.out_of_range_share() == 0.0
    assert h.coefficient_of_variation() == 0.0
    assert IdleTimeHistogram(bins=1, bin_s=60.0).coefficient_of_variation() == 0.0


@pytest.mark.parametrize(
    ("percentile", "expected"),
    [(0.0, 2), (5.0, 2), (5.01, 5), (10.0, 5), (50.0, 5), (95.0, 5), (95.01, 9), (99.0, 9), (100.0, 9)],
)
def test_percentile_bin_is_the_first_bin_reaching_the_share(percentile: float, expected: int) -> None:
    h = histogram({2: 1, 5: 18, 9: 1})  # 20 idle times: 5% in bin 2, 90% in bin 5, 5% in bin 9
    assert h.percentile_bin(percentile) == expected


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ({0: 4}, 2.0),  # [4, 0, 0, 0]: mean 1, sample sd 2
        ({0: 3, 1: 1}, math.sqrt(2)),  # [3, 1, 0, 0]: sample variance (4 + 0 + 1 + 1) / 3
        ({0: 1, 1: 1, 2: 1, 3: 1}, 0.0),
        ({0: 2, 1: 2, 2: 2, 3: 2}, 0.0),
    ],
)
def test_coefficient_of_variation_of_the_bin_counts(counts: dict[int, int], expected: float) -> None:
    assert histogram(counts, bins=4).coefficient_of_variation() == pytest.approx(expected)


def test_one_busy_bin_out_of_240_is_a_strong_pattern() -> None:
    h = histogram({9: 5}, bins=240)
    assert h.coefficient_of_variation() == pytest.approx(math.sqrt(240))


def test_out_of_range_idle_times_do_not_count_towards_the_percentiles() -> None:
    h = histogram({3: 4}, bins=10)
    for _ in range(100):
        h.add(1e6)
    assert h.percentile_bin(99.0) == 3
    assert h.out_of_range_share() == pytest.approx(100 / 104)


# -- windows --------------------------------------------------------------------------------


def test_defaults_follow_the_paper() -> None:
    config = HistogramConfig(bounds=Bounds(0, 1, 1.0))
    assert (config.bin_s, config.range_s) == (60.0, 4 * 3600.0)
    assert (config.head_percentile, config.tail_percentile, config.margin) == (5.0, 99.0, 0.10)
    assert make().histogram.counts == [0] * 240


def test_windows_of_a_periodic_pattern_carry_ten_percent_margins() -> None:
    policy = make()
    for _ in range(10):
        policy.histogram.add(599.0)  # every 10 minutes, 1 s of work: bin 9
    prewarm, keep_until = policy.windows()
    assert prewarm == pytest.approx(9 * 60 * 0.9)  # bin 9 starts at 540 s, less 10%: 486 s
    assert keep_until == pytest.approx(10 * 60 * 1.1)  # bin 9 ends at 600 s, plus 10%: 660 s
    assert policy.representative() is None


def test_windows_span_the_head_to_the_tail_percentile() -> None:
    policy = make()
    for idle, count in ((130.0, 1), (400.0, 98), (1000.0, 1)):
        for _ in range(count):
            policy.histogram.add(idle)
    # 1% in bin 2 is below the 5th percentile; the 99th is reached in bin 6.
    assert policy.windows() == (pytest.approx(6 * 60 * 0.9), pytest.approx(7 * 60 * 1.1))
    policy.histogram.add(1000.0)  # now 2 of 101 in bin 16: the 99th percentile moves there
    assert policy.windows()[1] == pytest.approx(17 * 60 * 1.1)


def test_head_in_the_first_bin_keeps_warm_from_the_start() -> None:
    policy = make(margin=0.0)
    for _ in range(5):
        policy.histogram.add(30.0)
    assert policy.windows() == (0.0, 60.0)


# -- representativeness -------------------------------------------------------------------------


def test_too_few_idle_times_are_not_representative() -> None:
    policy = make(min_samples=5)
    for _ in range(4):
        policy.histogram.add(599.0)
    assert "4 idle times < 5" in (policy.representative() or "")
    policy.histogram.add(599.0)
    assert policy.representative() is None


def test_too_many_idle_times_out_of_range_are_not_representative() -> None:
    policy = make(oob_threshold=0.5)
    for _ in range(5):
        policy.histogram.add(599.0)
        policy.histogram.add(5 * 3600.0)
    assert "50% of idle times beyond 14400s" in (policy.representative() or "")
    policy.histogram.add(599.0)
    assert policy.representative() is None  # 5 of 11


def test_idle_times_spread_evenly_show_no_pattern() -> None:
    policy = make(range_s=600.0, cv_threshold=2.0)  # 10 bins
    for index in range(10):
        policy.histogram.add(index * 60.0 + 30.0)
    assert "no clear pattern (CV 0.00 < 2)" in (policy.representative() or "")


# -- the policy on a fake clock -----------------------------------------------------------------


PERIOD = 600.0
ARRIVALS = [PERIOD * k for k in range(1, 8)]  # 7 requests: 6 idle times of 599 s


def test_no_requests_yet() -> None:
    policy = make()
    policy.observe(MetricSample(t=10.0, interval_s=10.0, average_concurrency=0.0, peak_concurrency=0,
                                arrivals=0, queued=0))
    decision = policy.decide(10.0, COUNTS)
    assert (decision.desired, decision.mode) == (0, "idle")
    assert "no requests yet" in decision.reason
    assert make(min_replicas=1).decide(0.0, COUNTS).desired == 1


def test_serving_follows_the_load_at_the_target() -> None:
    policy = make(target=2.0)
    decisions = run(policy, [5.0], until=10.0, width=5)
    decision = decisions[-1][1]
    assert (decision.desired, decision.mode) == (3, "active")
    assert "peak concurrency 5" in decision.reason


def test_periodic_requests_are_unloaded_then_prewarmed_then_served_warm() -> None:
    policy = make()
    decisions = run(policy, ARRIVALS, until=ARRIVALS[-1] + 1000.0)
    assert policy.histogram.counts[9] == 6 and policy.representative() is None
    last_finish = ARRIVALS[-1] + 1.0
    for t, decision in decisions:
        if t < ARRIVALS[-1] + 20:
            continue  # before the request, the request itself, and the sample that saw it end
        idle = t - last_finish
        if idle < 486.0:
            assert (decision.desired, decision.mode) == (0, "unloaded"), t
        elif idle < 660.0:
            assert (decision.desired, decision.mode) == (1, "prewarmed"), t
        else:
            assert (decision.desired, decision.mode) == (0, "unloaded"), t
            assert "beyond the 660s keep-alive" in decision.reason
    # Between the 6th and 7th requests (5 idle times learnt): served, unloaded at once,
    # pre-warmed at 486 s of idle, and the 7th request finds its replica warm.
    sixth, seventh = ARRIVALS[-2], ARRIVALS[-1]
    window = [(t, d.mode, d.desired) for t, d in decisions if sixth <= t <= seventh]
    assert [mode for _, mode, _ in window[:3]] == ["active", "active", "unloaded"]
    prewarmed = [t for t, mode, _ in window if mode == "prewarmed"]
    assert prewarmed[0] == sixth + 1.0 + 486.0 + 3.0  # the first tick at or past 486 s of idle
    assert prewarmed == [t for t in range(int(prewarmed[0]), int(seventh), 10)]
    assert all(desired == 0 for _, mode, desired in window if mode == "unloaded")
    assert window[-1][1:] == ("active", 1)


def test_before_the_histogram_is_representative_it_falls_back_to_a_fixed_keepalive() -> None:
    policy = make(fallback_keepalive_s=300.0)
    decisions = run(policy, ARRIVALS[:5], until=ARRIVALS[4] + 1000.0)  # 4 idle times only
    last_finish = ARRIVALS[4] + 1.0
    for t, decision in decisions:
        if t < last_finish + 10:
            continue
        assert decision.mode == "fallback"
        assert "4 idle times < 5" in decision.reason
        assert decision.desired == (1 if t - last_finish < 300.0 else 0), t


def test_mostly_out_of_range_idle_times_fall_back() -> None:
    arrivals = [600.0, 1200.0, 1800.0, 2400.0, 20_000.0, 40_000.0, 60_000.0]  # 3 in range, 3 beyond
    policy = make(fallback_keepalive_s=600.0, min_samples=3)
    decisions = run(policy, arrivals, until=arrivals[-1] + 700.0, tick=100.0)
    assert policy.histogram.out_of_range == 3
    decision = decisions[-3][1]
    assert decision.mode == "fallback" and "50% of idle times beyond" in decision.reason
    assert decision.desired == 1  # still within the 600 s keep-alive
    assert decisions[-1][1].desired == 0


def test_evenly_spread_idle_times_fall_back() -> None:
    policy = make(range_s=600.0, fallback_keepalive_s=120.0)
    now = 0.0
    arrivals = []
    for index in range(10):  # idle times of 30, 90, ..., 570 s: one in each bin
        now += index * 60.0 + 30.0 + 1.0
        arrivals.append(now)
    decisions = run(policy, arrivals, until=arrivals[-1] + 300.0, tick=1.0)
    decision = decisions[-1][1]
    assert (decision.desired, decision.mode) == (0, "fallback")
    assert "no clear pattern" in decision.reason
    assert between(decisions, arrivals[-1] + 100, arrivals[-1] + 101)[0].desired == 1


def test_the_capacity_of_a_burst_is_held_for_the_fixed_keepalive() -> None:
    # Too few idle times for a histogram: the fallback keep-alive (120 s) holds all three
    # replicas the burst needed, counted from the end of the burst at 101 s.
    policy = make(fallback_keepalive_s=120.0)
    decisions = run(policy, [100.0], until=300.0, width=3)
    assert between(decisions, 100.0, 110.0)[0].desired == 3
    held = between(decisions, 111.0, 220.0)
    assert held and all(d.desired == 3 and d.mode == "fallback" for d in held)
    assert all(d.desired == 0 for d in between(decisions, 230.0, 300.0))


def test_a_deployment_to_be_prewarmed_drops_its_burst_capacity_at_once() -> None:
    # Bursts of three every 600 s: idle times in bin 9, so the deployment is unloaded after
    # each burst and one replica is pre-warmed at 9 * 60 * 0.9 = 486 s.
    arrivals = [600.0 * k for k in range(1, 12)]
    policy = make(min_samples=5, fallback_keepalive_s=600.0)
    decisions = run(policy, arrivals, until=arrivals[-1] + 50.0, width=3)
    last = arrivals[-2]
    assert between(decisions, last, last + 10.0)[0].desired == 3
    after = between(decisions, last + 11.0, last + 480.0)
    assert after and all(d.desired == 0 and d.mode == "unloaded" for d in after)
    warm = between(decisions, last + 490.0, last + 600.0)
    assert warm and all(d.desired == 1 and d.mode == "prewarmed" for d in warm)


def test_min_and_max_replicas_bound_every_state() -> None:
    policy = make(min_replicas=2, max_replicas=2)
    for _, decision in run(policy, ARRIVALS, until=ARRIVALS[-1] + 1000.0, width=4):
        assert decision.desired == 2
