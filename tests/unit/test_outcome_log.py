"""A revision's outcome log: bounded by age and count, compact per entry, and its windows the
same as a plain scan of what it holds."""

from __future__ import annotations

import math
import random
import tracemalloc

from stratus.dispatch.outcomes import KEEP_MAX, KEEP_S, OutcomeLog, WindowStats, percentile


def _traced_bytes_of_filled_log(entries: int) -> tuple[OutcomeLog, int]:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        log = OutcomeLog()
        for i in range(entries):
            log.add(i % 50 != 0, 0.001 * (i % 997), 1000.0 + i * 0.01)
        return log, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_a_full_log_holds_each_outcome_in_a_few_dozen_bytes() -> None:
    # As a deque of (time, ok, latency) tuples an outcome took 120 bytes: a busy revision's
    # log grew the server by 11.5 MiB over its first hour (the soak's RSS slope).
    log, traced = _traced_bytes_of_filled_log(KEEP_MAX)
    assert log.window(0.0).requests == KEEP_MAX
    assert traced / KEEP_MAX < 40, f"{traced / KEEP_MAX:.1f} bytes an outcome"


def test_past_its_cap_the_log_keeps_the_newest_and_its_memory_stops_growing() -> None:
    log, traced = _traced_bytes_of_filled_log(3 * KEEP_MAX)
    assert len(log) == KEEP_MAX
    assert traced < 40 * KEEP_MAX
    # The newest KEEP_MAX: 0.01 s apart from 1000 s on, the first kept is number 2 * KEEP_MAX.
    start = 1000.0 + 2 * KEEP_MAX * 0.01
    assert log.window(0.0).requests == KEEP_MAX
    assert log.window(start - 0.005).requests == KEEP_MAX
    assert log.window(start + 0.005).requests == KEEP_MAX - 1


def test_outcomes_older_than_the_keep_time_leave_the_log() -> None:
    log = OutcomeLog()
    for second in range(int(KEEP_S) * 3):
        log.add(True, 0.01, float(second))
    assert len(log) == int(KEEP_S) + 1  # from now - KEEP_S to now, both ends in
    assert log.total == int(KEEP_S) * 3
    assert log.window(0.0).requests == len(log)


def _reference(entries: list[tuple[float, bool, float]], start: float) -> WindowStats:
    start = max(start, entries[-1][0] - KEEP_S)  # what is older has left the log
    kept = [entry for entry in entries if entry[0] >= start]
    p95 = percentile([latency for _, _, latency in kept], 95)
    return WindowStats(len(kept), sum(1 for _, ok, _ in kept if not ok),
                       p95 * 1000 if p95 is not None else None)


def test_windows_and_summaries_match_a_scan_of_the_entries() -> None:
    rng = random.Random(7)
    log = OutcomeLog()
    entries: list[tuple[float, bool, float]] = []
    now = 0.0
    for _ in range(5000):
        now += rng.choice([0.0, 0.001, 0.5, 3.0])  # equal times too
        ok, latency = rng.random() > 0.1, rng.expovariate(20.0)
        log.add(ok, latency, now)
        entries.append((now, ok, latency))
    assert log.errors == sum(1 for _, ok, _ in entries if not ok)
    for start in [-1.0, 0.0, entries[10][0], entries[2500][0], now - 60.0, now, now + 1.0]:
        expected = _reference(entries, start)
        assert log.window(start) == expected
        summary = log.summary(start)
        latencies = [latency for at, _, latency in entries if at >= max(start, now - KEEP_S)]
        p50 = percentile(latencies, 50)
        assert summary["requests"] == expected.requests
        assert summary["errors"] == expected.errors
        assert summary["p50_ms"] == (round(p50 * 1000, 3) if p50 is not None else None)
        p95 = summary["p95_ms"]
        assert (p95 is None) == (expected.p95_ms is None)
        if p95 is not None and expected.p95_ms is not None:
            assert math.isclose(p95, round(expected.p95_ms, 3))


def test_a_time_that_goes_back_counts_as_the_last_one() -> None:
    log = OutcomeLog()
    log.add(True, 0.1, 10.0)
    log.add(False, 0.2, 9.0)
    assert log.window(10.0) == WindowStats(2, 1, 200.0)
