"""Unit tests for the trace generator and the trace CSV format."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from stratus.sim.simulator import Invocation
from stratus.sim.tracegen import (
    CLASS_SHARES,
    MAX_DURATION_MS,
    PERIODS_S,
    TraceError,
    class_counts,
    generate_trace,
    parse_trace,
    read_trace,
    write_trace,
)

HEADER = "timestamp_s,deployment,duration_ms\n"


@pytest.fixture(scope="module")
def day() -> list[Invocation]:
    return generate_trace(deployments=20, hours=24.0, seed=11)


def by_deployment(trace: list[Invocation]) -> dict[str, list[Invocation]]:
    groups: dict[str, list[Invocation]] = defaultdict(list)
    for invocation in trace:
        groups[invocation.deployment].append(invocation)
    return groups


def test_same_seed_same_trace_other_seed_other_trace() -> None:
    first = generate_trace(deployments=8, hours=3.0, seed=5)
    assert generate_trace(deployments=8, hours=3.0, seed=5) == first
    assert generate_trace(deployments=8, hours=3.0, seed=6) != first


def test_class_counts_add_up_and_follow_the_shares() -> None:
    assert class_counts(50) == {"periodic": 15, "diurnal": 15, "bursty": 8, "rare": 7, "heavy": 5}
    for n in range(1, 80):
        counts = class_counts(n)
        assert sum(counts.values()) == n
        for name, share in CLASS_SHARES.items():
            assert abs(counts[name] - share * n) < 1


def test_trace_is_sorted_named_by_class_and_in_range(day: list[Invocation]) -> None:
    times = [inv.timestamp_s for inv in day]
    assert times == sorted(times)
    assert times[0] >= 0.0 and times[-1] < 24 * 3600
    assert all(1.0 <= inv.duration_ms <= MAX_DURATION_MS for inv in day)
    names = {inv.deployment for inv in day}
    assert all(re.fullmatch(r"(periodic|diurnal|bursty|rare|heavy)-\d{2}", name) for name in names)
    assert {name.rsplit("-", 1)[0] for name in names} == set(CLASS_SHARES)


def test_default_size_is_moderate() -> None:
    trace = generate_trace()
    assert 100_000 <= len(trace) <= 500_000
    assert len({inv.deployment for inv in trace}) >= 48


def test_periodic_deployments_keep_their_period(day: list[Invocation]) -> None:
    for name, invocations in by_deployment(day).items():
        if name.startswith("periodic"):
            gaps = np.diff([inv.timestamp_s for inv in invocations])
            period = float(np.median(gaps))
            assert min(abs(period - p) / p for p in PERIODS_S) < 0.02, name
            assert float(np.std(gaps)) < 0.05 * period, name


def test_rare_deployments_are_rare_and_bursty_ones_bursty(day: list[Invocation]) -> None:
    groups = by_deployment(day)
    for name, invocations in groups.items():
        if name.startswith("rare"):
            assert 1 <= len(invocations) <= 20, name
        if name.startswith("bursty") and len(invocations) > 50:
            gaps = np.diff([inv.timestamp_s for inv in invocations])
            assert np.std(gaps) / np.mean(gaps) > 3.0, name  # Poisson would give 1


def test_diurnal_rate_follows_the_day(day: list[Invocation]) -> None:
    for name, invocations in by_deployment(day).items():
        if name.startswith("diurnal"):
            hourly = np.bincount([int(inv.timestamp_s // 3600) for inv in invocations], minlength=24)
            assert hourly.max() > 2.0 * hourly.min() + 5, name


def test_heavy_deployments_have_heavy_tails(day: list[Invocation]) -> None:
    for name, invocations in by_deployment(day).items():
        if name.startswith("heavy") and len(invocations) >= 100:
            durations = np.array([inv.duration_ms for inv in invocations])
            assert np.percentile(durations, 99) > 4 * np.median(durations), name


def test_write_and_read_round_trip(tmp_path: Path) -> None:
    trace = generate_trace(deployments=5, hours=2.0, seed=2)
    path = tmp_path / "trace.csv"
    write_trace(path, trace)
    assert path.read_text().startswith(HEADER)
    assert read_trace(path) == trace


def test_parse_skips_blank_lines_and_sorts_rows() -> None:
    rows = parse_trace([HEADER, "5.5,b,10\n", "\n", " 1 , a , 2.5 \n"])
    assert rows == [Invocation(1.0, "a", 2.5), Invocation(5.5, "b", 10.0)]


@pytest.mark.parametrize(("lines", "message"), [
    (["timestamp,deployment,duration_ms\n"], "line 1: expected the header"),
    ([], "line 1: expected the header"),
    ([HEADER], "no invocations"),
    ([HEADER, "1,a,2\n", "2,a\n"], "line 3: expected 3 fields"),
    ([HEADER, "x,a,2\n"], "line 2: timestamp_s 'x' is not a number"),
    ([HEADER, "1,a,nan\n"], "line 2: duration_ms 'nan' is not a finite number"),
    ([HEADER, "1,,2\n"], "line 2: empty deployment name"),
    ([HEADER, "1,a,-3\n"], "line 2: duration_ms -3 is negative"),
])
def test_parse_errors_name_the_line(lines: list[str], message: str) -> None:
    with pytest.raises(TraceError, match=re.escape(message)):
        parse_trace(lines)


def test_generator_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        generate_trace(deployments=0)
    with pytest.raises(ValueError):
        generate_trace(hours=0.0)
