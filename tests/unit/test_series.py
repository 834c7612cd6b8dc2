"""The dashboard's per-second series: buckets, reservoir, weighted percentiles, summaries."""

from __future__ import annotations

import tracemalloc

from stratus.dispatch.outcomes import Outcome
from stratus.observe.series import KEEP_S, SAMPLE_PER_BUCKET, Bucket, SeriesBook, weighted_percentile

KEY = ("default", "echo")
T0 = 1_800_000_000


def outcome(at: float, latency_s: float = 0.1, ok: bool = True, cold: bool = False,
            shadow: bool = False) -> Outcome:
    return Outcome(namespace="default", deployment="echo", revision=1, ok=ok, latency_s=latency_s,
                   shadow=shadow, at=at, status=200 if ok else 500, cold_start=cold)


def test_counts_land_in_their_second_and_gaps_are_filled() -> None:
    book = SeriesBook({})
    book.observe(outcome(T0 + 0.2))
    book.observe(outcome(T0 + 0.9, ok=False, cold=True))
    book.observe(outcome(T0 + 2.5))
    book.observe(outcome(T0 + 1.1))  # late, but its second is still there
    points = book.points(KEY, 10, now=T0 + 3)
    assert points["t"][-4:] == [T0, T0 + 1, T0 + 2, T0 + 3]
    assert points["requests"][-4:] == [2, 1, 1, 0]
    assert points["errors"][-4:] == [1, 0, 0, 0]
    assert points["cold_start_requests"][-4:] == [1, 0, 0, 0]
    assert points["replica_starts"] == [0] * 10
    assert points["p50_ms"][-4:] == [100.0, 100.0, 100.0, None]
    assert points["concurrency"] == [None] * 10, "never sampled: no gauge values"


def test_requests_that_waited_and_replicas_started_are_two_counts() -> None:
    """One replica start can hold many requests, and a replica started ahead of traffic (a
    scale-up, a minimum) holds none: the dashboard shows both, each named for what it counts."""
    book = SeriesBook({})
    book.replica_started("default", "echo", 0.05, wall=T0 + 0.5)
    for index in range(5):  # five requests queued behind that one start
        book.observe(outcome(T0 + 0.6 + index * 0.01, cold=True))
    book.replica_started("default", "echo", 0.04, wall=T0 + 1.5)  # a scale-up, nobody waited
    points = book.points(KEY, 3, now=T0 + 2)
    assert points["cold_start_requests"] == [5, 0, 0]
    assert points["replica_starts"] == [1, 1, 0]
    summary = book.summary(KEY, 60, now=T0 + 2)
    assert (summary["cold_start_requests"], summary["replica_starts"]) == (5, 2)
    assert "cold_starts" not in summary, "the ambiguous name is gone"


def test_shadow_copies_are_left_out() -> None:
    book = SeriesBook({})
    book.observe(outcome(T0, shadow=True))
    assert book.summary(KEY, 60, now=T0)["requests"] == 0
    assert book.recent(KEY, 10) == []


def test_summary_over_a_window() -> None:
    book = SeriesBook({})
    for index in range(100):
        book.observe(outcome(T0 + index * 0.5, latency_s=(index + 1) / 1000, ok=index % 10 != 0))
    summary = book.summary(KEY, 60, now=T0 + 50)
    assert summary["requests"] == 100
    assert summary["rps"] == round(100 / 60, 3)
    assert summary["error_ratio"] == 0.1
    assert summary["p50_ms"] == 50.0 and summary["p99_ms"] == 99.0
    assert book.summary(KEY, 10, now=T0 + 50)["requests"] == 18  # seconds 41 to 49, two each


def test_old_buckets_are_dropped() -> None:
    book = SeriesBook({})
    book.observe(outcome(T0))
    book.observe(outcome(T0 + KEEP_S + 5))
    book.observe(outcome(T0 + 3))  # too old to keep
    book.observe(outcome(T0 + KEEP_S))  # late, but within what is kept
    buckets = book.series[KEY].buckets
    assert [bucket.second for bucket in buckets] == [T0 + KEEP_S, T0 + KEEP_S + 5]


def test_a_busy_second_keeps_a_bounded_sample_and_weighs_more() -> None:
    book = SeriesBook({})
    for _ in range(1000):
        book.observe(outcome(T0, latency_s=1.0))
    book.observe(outcome(T0 + 1, latency_s=0.001))
    busy = book.series[KEY].buckets[0]
    assert busy.requests == 1000 and len(busy.latencies) == SAMPLE_PER_BUCKET
    # 1000 slow requests against one fast one: the median is slow, however few were kept.
    assert book.summary(KEY, 10, now=T0 + 1)["p50_ms"] == 1000.0


def test_weighted_percentile_of_nothing() -> None:
    assert weighted_percentile([], 50) is None
    assert weighted_percentile([Bucket(T0)], 99) is None


def test_recent_invocations_newest_first() -> None:
    book = SeriesBook({})
    for index in range(3):
        book.observe(outcome(T0 + index))
    assert [entry["at"] for entry in book.recent(KEY, 2)] == [T0 + 2, T0 + 1]


def test_a_deployments_full_series_stays_within_its_cap() -> None:
    # 900 s of a deployment busy enough to fill every second's sample: the most one keeps.
    book = SeriesBook({})
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for second in range(KEEP_S * 2):
            for index in range(SAMPLE_PER_BUCKET + 8):
                book.observe(outcome(T0 + second, latency_s=0.001 * (index + 1)))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(book.series[KEY].buckets) == KEEP_S
    # A list of boxed floats made it 2.2 KiB a second (2 MiB a busy deployment).
    assert held / KEEP_S < 1024, f"{held / KEEP_S:.0f} bytes a second"
