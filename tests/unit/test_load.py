"""Unit tests for the time-weighted load recorder, its idle times and its metric samples."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stratus.dispatch.load import LoadRecorder, MetricSample


def test_fresh_recorder_samples_zero_load() -> None:
    recorder = LoadRecorder(now=100.0)
    sample = recorder.sample(now=110.0, queued=0)
    assert sample == MetricSample(
        t=110.0, interval_s=10.0, average_concurrency=0.0, peak_concurrency=0, arrivals=0, queued=0
    )


def test_single_request_for_half_the_interval_averages_one_half() -> None:
    recorder = LoadRecorder(now=0.0)
    recorder.enter(1.0)
    recorder.leave(3.0)
    sample = recorder.sample(now=4.0, queued=0)
    assert sample.interval_s == 4.0
    assert sample.average_concurrency == pytest.approx(0.5)
    assert sample.peak_concurrency == 1
    assert sample.arrivals == 1


def test_overlapping_requests_are_weighted_by_time() -> None:
    recorder = LoadRecorder(now=0.0)
    recorder.enter(1.0)  # 1 in flight on [1, 2)
    recorder.enter(2.0)  # 2 in flight on [2, 3)
    recorder.leave(3.0)  # 1 in flight on [3, 5)
    recorder.leave(5.0)
    sample = recorder.sample(now=5.0, queued=0)
    # area = 1*1 + 2*1 + 1*2 = 5 over 5 s
    assert sample.average_concurrency == pytest.approx(1.0)
    assert sample.peak_concurrency == 2
    assert sample.arrivals == 2


def test_queued_is_passed_through_and_rps_counts_arrivals() -> None:
    recorder = LoadRecorder(now=0.0)
    for t in (0.5, 1.0, 1.5, 2.0):
        recorder.enter(t)
    sample = recorder.sample(now=2.0, queued=7)
    assert sample.queued == 7
    assert sample.arrivals == 4
    assert sample.rps == pytest.approx(2.0)
    assert recorder.current == 4


def test_sample_resets_area_peak_and_arrivals_but_keeps_in_flight_requests() -> None:
    recorder = LoadRecorder(now=0.0)
    recorder.enter(0.0)
    recorder.enter(0.0)
    recorder.enter(0.0)
    recorder.leave(1.0)
    recorder.leave(1.0)
    first = recorder.sample(now=2.0, queued=0)
    assert first.peak_concurrency == 3
    assert first.average_concurrency == pytest.approx((3 * 1 + 1 * 1) / 2)
    # One request still in flight: the next interval sees it for its whole length,
    # its peak starts from the current level, and no new arrivals are counted.
    second = recorder.sample(now=6.0, queued=0)
    assert second.interval_s == pytest.approx(4.0)
    assert second.average_concurrency == pytest.approx(1.0)
    assert second.peak_concurrency == 1
    assert second.arrivals == 0
    recorder.leave(7.0)
    third = recorder.sample(now=8.0, queued=0)
    assert third.average_concurrency == pytest.approx(0.5)
    assert third.peak_concurrency == 1  # it was in flight when the interval began
    fourth = recorder.sample(now=10.0, queued=0)
    assert fourth.average_concurrency == 0.0
    assert fourth.peak_concurrency == 0


def test_peak_counts_a_burst_shorter_than_the_interval() -> None:
    recorder = LoadRecorder(now=0.0)
    for _ in range(5):
        recorder.enter(1.0)
    for _ in range(5):
        recorder.leave(1.0)  # zero-length burst: no area, but the peak is seen
    sample = recorder.sample(now=10.0, queued=0)
    assert sample.peak_concurrency == 5
    assert sample.average_concurrency == 0.0
    assert sample.arrivals == 5


def test_zero_length_interval_reports_current_concurrency() -> None:
    recorder = LoadRecorder(now=5.0)
    recorder.enter(5.0)
    recorder.enter(5.0)
    sample = recorder.sample(now=5.0, queued=1)
    assert sample.interval_s == 0.0
    assert sample.average_concurrency == 2.0
    assert sample.rps == 0.0  # no division by zero


def test_rps_is_zero_for_a_zero_interval() -> None:
    sample = MetricSample(
        t=1.0, interval_s=0.0, average_concurrency=0.0, peak_concurrency=0, arrivals=3, queued=0
    )
    assert sample.rps == 0.0


def test_metric_sample_is_immutable() -> None:
    sample = LoadRecorder(now=0.0).sample(now=1.0, queued=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sample.queued = 3  # type: ignore[misc]


def test_sample_is_stamped_with_the_policy_clock() -> None:
    recorder = LoadRecorder(now=100.0)  # monotonic seconds
    recorder.enter(101.0)
    sample = recorder.sample(110.0, 0, t=1_767_225_600.0)  # Unix time
    assert sample.t == 1_767_225_600.0
    assert sample.interval_s == 10.0
    assert recorder.sample(now=120.0, queued=0).t == 120.0  # by default, the recorder's own clock


def test_idle_time_runs_from_the_last_finish_to_the_next_arrival() -> None:
    recorder = LoadRecorder(now=0.0)
    recorder.enter(1.0)  # the first request ever: no idle time before it
    recorder.leave(3.0)
    recorder.enter(7.0)  # idle 3 s -> 7 s
    recorder.leave(8.0)
    recorder.enter(8.0)  # back to back: an idle time of 0
    recorder.leave(9.5)
    sample = recorder.sample(now=10.0, queued=0)
    assert sample.idle_gaps == (4.0, 0.0)
    assert sample.idle_for_s == pytest.approx(0.5)


def test_no_idle_time_while_another_request_runs() -> None:
    recorder = LoadRecorder(now=0.0)
    recorder.enter(1.0)
    recorder.enter(2.0)
    recorder.leave(3.0)
    recorder.enter(4.0)  # one still ran: the deployment was never idle
    recorder.leave(5.0)
    recorder.leave(6.0)
    recorder.enter(9.0)
    sample = recorder.sample(now=10.0, queued=0)
    assert sample.idle_gaps == (3.0,)
    assert sample.idle_for_s is None  # busy at the end of the interval


def test_an_idle_time_is_reported_in_the_interval_it_ends_in() -> None:
    recorder = LoadRecorder(now=0.0)
    recorder.enter(1.0)
    recorder.leave(2.0)
    first = recorder.sample(now=10.0, queued=0)
    assert first.idle_gaps == ()
    assert first.idle_for_s == 8.0
    second = recorder.sample(now=20.0, queued=0)
    assert (second.idle_gaps, second.idle_for_s) == ((), 18.0)  # still idle, since 2 s
    recorder.enter(25.0)
    third = recorder.sample(now=30.0, queued=0)
    assert third.idle_gaps == (23.0,)
    assert third.idle_for_s is None
    recorder.leave(31.0)
    fourth = recorder.sample(now=40.0, queued=0)
    assert fourth.idle_gaps == ()  # reported once
    assert fourth.idle_for_s == 9.0


def test_never_used_is_not_idle() -> None:
    sample = LoadRecorder(now=0.0).sample(now=600.0, queued=0)
    assert (sample.idle_gaps, sample.idle_for_s) == ((), None)


def test_instant_reading_leaves_the_interval_alone() -> None:
    recorder = LoadRecorder(now=0.0)
    recorder.enter(1.0)
    recorder.leave(2.0)
    recorder.enter(5.0)
    recorder.enter(5.0)
    reading = recorder.instant(now=5.0, queued=1, t=1000.0)
    assert reading == MetricSample(t=1000.0, interval_s=0.0, average_concurrency=2.0, peak_concurrency=2,
                                   arrivals=0, queued=1)
    assert recorder.instant(now=5.0, queued=0).t == 5.0
    # The periodic sample still sees everything since the last one.
    sample = recorder.sample(now=10.0, queued=0)
    assert (sample.arrivals, sample.peak_concurrency, sample.idle_gaps) == (3, 2, (3.0,))
    assert sample.average_concurrency == pytest.approx((1 * 1 + 2 * 5) / 10)


@pytest.mark.parametrize(
    ("peak", "arrivals", "queued", "active"),
    [(0, 0, 0, False), (1, 0, 0, True), (0, 1, 0, True), (0, 0, 1, True)],
)
def test_active_means_any_load_in_the_interval(peak: int, arrivals: int, queued: int, active: bool) -> None:
    sample = MetricSample(t=1.0, interval_s=1.0, average_concurrency=0.0, peak_concurrency=peak,
                          arrivals=arrivals, queued=queued)
    assert sample.active is active


events = st.lists(
    st.tuples(st.floats(min_value=0.0, max_value=5.0, allow_nan=False), st.booleans()),
    max_size=40,
)


@given(start=st.floats(min_value=0.0, max_value=1e6, allow_nan=False), steps=events,
       tail=st.floats(min_value=0.001, max_value=5.0, allow_nan=False))
def test_property_average_equals_the_integral_of_concurrency(
    start: float, steps: list[tuple[float, bool]], tail: float
) -> None:
    recorder = LoadRecorder(now=start)
    now, level, area, peak, arrivals = start, 0, 0.0, 0, 0
    gaps: list[float] = []
    last_finish: float | None = None
    for gap, entering in steps:
        nxt = now + gap
        if not entering and level == 0:
            entering = True  # never leave more requests than entered
        area += level * (nxt - now)
        now = nxt
        if entering:
            if level == 0 and last_finish is not None:
                gaps.append(now - last_finish)
            recorder.enter(now)
            level += 1
            arrivals += 1
            peak = max(peak, level)
        else:
            recorder.leave(now)
            level -= 1
            if level == 0:
                last_finish = now
    end = now + tail
    area += level * (end - now)
    sample = recorder.sample(now=end, queued=0)
    assert sample.interval_s == pytest.approx(end - start)
    assert sample.average_concurrency == pytest.approx(area / (end - start), rel=1e-6, abs=1e-6)
    assert sample.peak_concurrency == peak
    assert sample.arrivals == arrivals
    assert 0.0 <= sample.average_concurrency <= sample.peak_concurrency + 1e-9
    assert recorder.current == level
    assert sample.idle_gaps == pytest.approx(tuple(gaps))
    assert all(g >= 0 for g in sample.idle_gaps)
    if level == 0 and last_finish is not None:
        assert sample.idle_for_s == pytest.approx(end - last_finish)
    else:
        assert sample.idle_for_s is None
