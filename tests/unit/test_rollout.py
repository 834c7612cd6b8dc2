"""The rollout policy: canary stages and the rollback judge."""

from __future__ import annotations

import pytest

from stratus.control.rollout import RollbackThresholds, WindowStats, canary_plan, judge
from stratus.errors import BadRequest


def test_canary_plans() -> None:
    assert canary_plan(10, 25) == [10, 25, 50, 75, 100]
    assert canary_plan(25, 25) == [25, 50, 75, 100]
    assert canary_plan(10, 50) == [10, 50, 100]
    assert canary_plan(100, 10) == [100]
    assert canary_plan(5, 100) == [5, 100]
    for canary, step in ((0, 10), (101, 10), (10, 0)):
        with pytest.raises(BadRequest):
            canary_plan(canary, step)


HEALTHY = WindowStats(requests=200, errors=2, p95_ms=20.0)


def test_a_revision_failing_30_percent_is_rolled_back() -> None:
    verdict = judge(WindowStats(requests=60, errors=18, p95_ms=20.0), HEALTHY)
    assert verdict.action == "rollback"
    assert "30.0%" in verdict.reason


def test_a_few_errors_are_not_enough() -> None:
    # 4 errors in 10 is a high ratio, but under the minimum count of 5.
    assert judge(WindowStats(requests=10, errors=4, p95_ms=20.0), HEALTHY).action == "wait"


def test_the_error_threshold_is_relative_to_the_baseline() -> None:
    noisy = WindowStats(requests=1000, errors=100, p95_ms=20.0)  # 10% errors already
    assert judge(WindowStats(requests=100, errors=10, p95_ms=20.0), noisy).action == "continue"
    assert judge(WindowStats(requests=100, errors=12, p95_ms=20.0), noisy).action == "rollback"


def test_latency_regression_is_rolled_back_but_only_with_enough_requests() -> None:
    slow = WindowStats(requests=100, errors=0, p95_ms=31.0)
    assert judge(slow, HEALTHY).action == "rollback"
    assert "p95" in judge(slow, HEALTHY).reason
    assert judge(WindowStats(requests=100, errors=0, p95_ms=29.0), HEALTHY).action == "continue"
    assert judge(WindowStats(requests=5, errors=0, p95_ms=90.0), HEALTHY).action == "wait"


def test_thresholds_are_configurable() -> None:
    strict = RollbackThresholds(p95_relative=0.1, min_requests=1)
    assert judge(WindowStats(requests=3, errors=0, p95_ms=23.0), HEALTHY, strict).action == \
        "rollback"
