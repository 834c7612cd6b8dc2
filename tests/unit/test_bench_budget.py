"""bench/budget.py's rules, not its timings: which way is worse for each figure, the
tolerance, the better of the rounds, the exit status, and that every figure it measures has
its row in bench/current_figures.json."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def budget() -> Iterator[ModuleType]:
    # bench/ only while importing: its grpc.py must not shadow the grpcio package for others.
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("budget")
    finally:
        sys.path.remove(str(BENCH))


def test_lower_throughput_is_worse_and_higher_is_better(budget: ModuleType) -> None:
    assert budget.judge("req/s", 1000, 800, "higher", 0.15).verdict == "WORSE"
    assert budget.judge("req/s", 1000, 1200, "higher", 0.15).verdict == "better"
    slower = budget.judge("req/s", 1000, 900, "higher", 0.15)
    assert (slower.verdict, round(slower.change, 3), round(slower.worse_by, 3)) == ("ok", -0.1, 0.1)


def test_higher_latency_is_worse_and_lower_is_better(budget: ModuleType) -> None:
    assert budget.judge("p50", 0.5, 0.6, "lower", 0.15).verdict == "WORSE"
    assert budget.judge("p50", 0.5, 0.4, "lower", 0.15).verdict == "better"
    faster = budget.judge("p50", 0.5, 0.45, "lower", 0.15)
    assert (faster.verdict, round(faster.change, 3), round(faster.worse_by, 3)) == ("ok", -0.1, -0.1)


def test_the_tolerance_is_the_bound_itself(budget: ModuleType) -> None:
    # 25% up and down: exactly as much worse as the tolerance is still within it.
    assert budget.judge("p50", 4.0, 5.0, "lower", 0.25).verdict == "ok"
    assert budget.judge("p50", 4.0, 5.01, "lower", 0.25).verdict == "WORSE"
    assert budget.judge("req/s", 4.0, 3.0, "higher", 0.25).verdict == "ok"
    assert budget.judge("req/s", 4.0, 2.99, "higher", 0.25).verdict == "WORSE"
    assert budget.judge("req/s", 100, 99, "higher", 0.0).verdict == "WORSE"
    assert budget.judge("req/s", 100, 40, "higher", 0.7).verdict == "ok"


def test_a_recorded_figure_of_zero_is_no_budget(budget: ModuleType) -> None:
    with pytest.raises(ValueError):
        budget.judge("failed", 0, 3, "lower", 0.15)


def test_the_better_round_counts(budget: ModuleType) -> None:
    assert budget.best([1741.0, 2079.0], "higher") == 2079.0
    assert budget.best([0.77, 0.646], "lower") == 0.646
    with pytest.raises(ValueError):
        budget.best([], "lower")


def test_the_exit_status(budget: ModuleType) -> None:
    ok = budget.judge("a", 1, 1, "lower", 0.15)
    worse = budget.judge("b", 1, 2, "lower", 0.15)
    better = budget.judge("c", 1, 0.5, "lower", 0.15)
    assert budget.exit_status([ok, better], {}) == 0
    assert budget.exit_status([ok, worse], {}) == 1
    assert budget.exit_status([ok], {"coldstart": "RuntimeError: boom"}) == 2


def test_a_figure_recorded_on_another_cpu_is_told_apart(budget: ModuleType) -> None:
    assert budget.same_cpu("Intel Xeon", "Intel(R) Xeon(R) Processor")
    assert budget.same_cpu("AMD EPYC", "AMD EPYC")
    assert not budget.same_cpu("Intel Xeon", "AMD EPYC")
    assert not budget.same_cpu("AMD EPYC", None)
    assert not budget.same_cpu("not stated", "AMD EPYC")


def test_every_budget_has_its_row_and_the_row_says_which_way_is_better(budget: ModuleType) -> None:
    figures = budget.load()
    directions = {b.row_id: figures.row(b.row_id).better for b in budget.BUDGETS}
    assert directions == {
        "noop-c32-rps-starlette": "higher",
        "noop-c1-p50-starlette": "lower",
        "noop-c1-p99": "lower",
        "coldstart-median-ray": "lower",
        "coldstart-p90": "lower",
    }
    assert {b.bench for b in budget.BUDGETS} == set(budget.RUNNERS) == set(budget.BENCHES)
