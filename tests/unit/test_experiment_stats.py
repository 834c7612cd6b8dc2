"""The experiment statistics against textbook examples and values worked out here by hand,
and the bounded latency sample they are computed from."""

from __future__ import annotations

import json
import math
import random
import statistics
from datetime import UTC, datetime

import pytest
from scipy.stats import t as student_t

from stratus.experiments.assignment import RESERVOIR, Experiment, VariantStats
from stratus.experiments.book import report
from stratus.experiments.statistics import (
    compare_conversion,
    compare_latency,
    format_p,
    two_proportion_z,
    welch_t,
)
from stratus.store.experiments import ExperimentRecord

# Wikipedia's first example for Welch's t-test: t = -2.46, df = 24.9, p = 0.021 for A1 vs A2.
A1 = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
A2 = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]


def z_by_hand(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float]:
    pooled = (x1 + x2) / (n1 + n2)
    z = (x2 / n2 - x1 / n1) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return z, math.erfc(abs(z) / math.sqrt(2))  # two-sided normal tail


def welch_by_hand(a: list[float], b: list[float]) -> tuple[float, float]:
    """(t of b minus a, two-sided p) with the Welch-Satterthwaite degrees of freedom."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    t = (statistics.fmean(b) - statistics.fmean(a)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return t, 2 * float(student_t.sf(abs(t), df))


def test_two_proportion_z_textbook_example() -> None:
    # 5.0% of 1,000 against 8.1% of 1,000: pooled 6.55%, standard error
    # sqrt(0.0655 * 0.9345 * 2 / 1000) = 0.011064, z = 0.031 / 0.011064 = 2.8018, p = 0.0051.
    found = two_proportion_z(50, 1000, 81, 1000)
    assert found is not None
    z, p = found
    assert z == pytest.approx(2.8018, abs=1e-4)
    assert p == pytest.approx(0.0051, abs=1e-4)
    assert (z, p) == pytest.approx(z_by_hand(50, 1000, 81, 1000), rel=1e-9)


@pytest.mark.parametrize("counts", [(8, 40, 20, 40), (30, 200, 24, 180), (1, 7, 0, 9),
                                    (500, 10_000, 560, 10_000)])
def test_two_proportion_z_matches_the_hand_computation(counts: tuple[int, int, int, int]) -> None:
    found = two_proportion_z(*counts)
    assert found == pytest.approx(z_by_hand(*counts), rel=1e-9)


def test_welch_textbook_example() -> None:
    found = welch_t(A1, A2)
    assert found is not None
    t, p = found
    assert t == pytest.approx(2.46, abs=0.005)  # A2 minus A1
    assert p == pytest.approx(0.021, abs=0.0005)
    assert (t, p) == pytest.approx(welch_by_hand(A1, A2), rel=1e-9)


def test_welch_with_unequal_sizes_and_variances_matches_the_hand_computation() -> None:
    fast = [10.0, 11.5, 9.8, 10.2, 10.9, 10.1]
    slow = [14.0, 19.5, 12.2, 25.0, 16.3, 13.9, 21.7, 18.8, 15.5]
    assert welch_t(fast, slow) == pytest.approx(welch_by_hand(fast, slow), rel=1e-9)


def test_conversion_verdicts() -> None:
    better = compare_conversion("control", "treatment", (50, 1000), (81, 1000))
    assert better.significant and better.test == "two-proportion z-test"
    assert better.verdict == "treatment converts better than control (8.1% vs 5.0%, p=0.0051)"
    worse = compare_conversion("control", "treatment", (81, 1000), (50, 1000))
    assert worse.significant and worse.statistic is not None and worse.statistic < 0
    assert worse.verdict.startswith("treatment converts worse than control (5.0% vs 8.1%")
    same = compare_conversion("a", "b", (40, 800), (42, 800))
    assert not same.significant
    assert same.verdict == f"no significant difference in conversion yet ({format_p(same.p_value or 0)})"
    stricter = compare_conversion("control", "treatment", (50, 1000), (81, 1000), alpha=0.001)
    assert not stricter.significant


def test_latency_verdicts() -> None:
    slower = compare_latency("control", "treatment", A1, A2)
    assert slower.significant and slower.test == "Welch's t-test"
    assert slower.verdict.startswith("treatment is slower than control (mean 23.0 ms vs 20.8 ms")
    faster = compare_latency("control", "treatment", A2, A1)
    assert faster.significant and faster.verdict.startswith("treatment is faster than control")
    assert not compare_latency("control", "treatment", A1, A2, alpha=0.01).significant


@pytest.mark.parametrize("control, variant", [
    ((0, 0), (5, 10)),  # the control saw no request
    ((3, 10), (0, 0)),  # nor did the variant
    ((0, 10), (0, 12)),  # nobody converted: the pooled rate is 0
    ((10, 10), (12, 12)),  # everybody did: it is 1
    ((15, 10), (3, 10)),  # more conversions than requests
])
def test_degenerate_conversion_counts_give_no_numbers(control: tuple[int, int],
                                                      variant: tuple[int, int]) -> None:
    result = compare_conversion("a", "b", control, variant)
    assert result.statistic is None and result.p_value is None and not result.significant
    assert result.verdict.startswith("not enough data")
    json.dumps(result.view("z"), allow_nan=False)


@pytest.mark.parametrize("control, variant", [
    ([], [1.0, 2.0]),
    ([1.0], [1.0, 2.0]),
    ([5.0, 5.0, 5.0], [5.0, 5.0]),  # identical, no variance
    ([5.0, 5.0, 5.0], [7.0, 7.0]),  # no variance on either side: t would be infinite
])
def test_degenerate_latencies_give_no_numbers(control: list[float], variant: list[float]) -> None:
    result = compare_latency("a", "b", control, variant)
    assert result.statistic is None and result.p_value is None and not result.significant
    assert result.verdict.startswith("not enough data")
    assert set(result.view("t")) == {"test", "t", "p_value", "significant", "verdict"}


def test_one_constant_side_is_still_a_valid_welch_test() -> None:
    found = welch_t([5.0, 5.0, 5.0, 5.0], [6.0, 7.0, 8.0])
    assert found == pytest.approx(welch_by_hand([5.0, 5.0, 5.0, 5.0], [6.0, 7.0, 8.0]))


def test_p_values_read_plainly() -> None:
    assert format_p(0.41) == "p=0.41"
    assert format_p(0.0031) == "p=0.0031"
    assert format_p(0.0004) == "p<0.001"


def test_the_latency_reservoir_is_bounded_and_uniform() -> None:
    stats, rng = VariantStats(), random.Random(7)
    total = 5 * RESERVOIR
    for i in range(total):
        stats.add(True, i / total, rng)  # latencies rise with time: 0 .. 1 s
    stats.add(False, 99.0, rng)
    assert (stats.requests, stats.errors, stats.seen) == (total + 1, 1, total)
    assert len(stats.latencies_ms) == RESERVOIR and max(stats.latencies_ms) < 1000
    # A uniform sample of all: as many early values as late ones, and the mean near 500 ms.
    early = sum(1 for value in stats.latencies_ms if value < 500)
    assert abs(early / RESERVOIR - 0.5) < 0.03
    assert abs(statistics.fmean(stats.latencies_ms) - 500) < 15
    restored = VariantStats.restore(json.loads(json.dumps(stats.snapshot())))
    assert restored.snapshot() == stats.snapshot()


def test_a_report_with_degenerate_counts_is_valid_json() -> None:
    record = ExperimentRecord(
        namespace="default", name="exp", deployment="shop", variants=(("a", 1), ("b", 2)),
        control="a", alpha=0.05, traffic=None, sticky=None, created_at=datetime.now(UTC),
        conversions={"a": 0, "b": 5},
        stats={"a": {"requests": 0}, "b": {"requests": 2, "errors": 2, "seen": 0}},
    )
    found = report(Experiment.of(record))
    text = json.dumps(found, allow_nan=False)  # raises on NaN or infinity
    control, variant = json.loads(text)["variants"]
    assert control["error_ratio"] is None and control["conversion_rate"] is None
    assert control["p50_ms"] is None and control["comparison"] is None
    assert variant["error_ratio"] == 1.0 and variant["conversion_rate"] == 2.5
    for aspect in ("conversion", "latency"):
        assert variant["comparison"][aspect]["verdict"].startswith("not enough data")
