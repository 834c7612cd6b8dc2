"""bench/grpc_stats.py, the numbers of bench/grpc.py: its measurement window, the merge of
client processes into one cell, the stream split and the goal lines."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def stats() -> Iterator[ModuleType]:
    # bench/ only while importing: its grpc.py must not shadow the grpcio package for others.
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("grpc_stats")
    finally:
        sys.path.remove(str(BENCH))


def test_the_window_keeps_the_calls_that_ended_inside_it(stats: ModuleType) -> None:
    completions = [(10.5, 4.0), (9.0, 1.0), (11.0, 2.0), (12.5, 8.0)]  # 9.0: warm-up
    window = stats.measured_window(completions, start=10.0, duration=2.0, min_requests=2)
    assert (window.seconds, window.latencies_ms, window.extended) == (2.0, [4.0, 2.0], False)


def test_a_slow_cell_stretches_its_window_to_the_calls_it_needs(stats: ModuleType) -> None:
    completions = [(14.0, 3000.0), (11.5, 2500.0), (19.0, 5000.0)]
    window = stats.measured_window(completions, start=10.0, duration=2.0, min_requests=2)
    assert window.extended and window.seconds == pytest.approx(4.0)
    assert window.latencies_ms == [2500.0, 3000.0]


def test_too_few_calls_in_all_keep_the_plain_window(stats: ModuleType) -> None:
    window = stats.measured_window([(11.0, 1.0)], start=10.0, duration=2.0, min_requests=3)
    assert (window.seconds, window.latencies_ms, window.extended) == (2.0, [1.0], False)


def test_merge_adds_rates_and_pools_latencies(stats: ModuleType) -> None:
    reports = [
        {"window_s": 2.0, "latencies_ms": [10.0, 20.0], "errors": 0, "cpu_s": 0.5, "extended": False},
        {"window_s": 4.0, "latencies_ms": [30.0, 40.0], "errors": 1, "cpu_s": 0.25, "extended": True},
    ]
    cell = stats.merge(reports, tensor_bytes=1_000_000)
    assert cell.requests_per_s == pytest.approx(1.5)  # 2/2 s + 2/4 s
    assert cell.p50_ms == pytest.approx(25.0)
    assert (cell.requests, cell.errors, cell.client_cpu_s, cell.extended) == (4, 1, 0.75, True)
    assert cell.gbps == pytest.approx(1.5e6 / 1e9)
    assert cell.gbps_one_call == pytest.approx(1e6 / 0.025 / 1e9)


def test_streams_spread_evenly_over_at_most_one_process_a_stream(stats: ModuleType) -> None:
    assert stats.split_streams(32, 2) == [16, 16]
    assert stats.split_streams(5, 2) == [3, 2]
    assert stats.split_streams(1, 4) == [1]


def test_goal_lines_say_met_or_not_and_never_pass_what_was_not_measured(stats: ModuleType) -> None:
    assert stats.goal_line("x", 3.5, 3.0, "x").endswith("3.50x (goal >= 3x): MET")
    assert stats.goal_line("x", 0.8, 1.0, " GB/s").endswith("0.80 GB/s (goal >= 1 GB/s): NOT MET")
    assert "not measured" in stats.goal_line("x", None, 3.0, "x")
    assert stats.ratio(None, 2.0) is None and stats.ratio(6.0, 2.0) == 3.0


def test_outputs_are_compared_with_the_first_target(stats: ModuleType) -> None:
    checks = {"a": [0.1, 0.9], "b": [0.10001, 0.9], "c": [0.2, 0.8], "d": [0.1]}
    assert stats.outputs_agree(checks) == ["c", "d"]
