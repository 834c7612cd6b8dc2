"""The rollout policy: canary stages and the rollback judge."""

from __future__ import annotations

import pytest

from stratus.control.rollout import (
    RollbackThresholds,
    RolloutState,
    Step,
    advance,
    apply,
    canary_plan,
    judge,
    judging_window,
    kept_warm,
    warm_replicas,
)
from stratus.dispatch.outcomes import WindowStats
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
    slow = WindowStats(requests=100, errors=0, p95_ms=41.0)
    assert judge(slow, HEALTHY).action == "rollback"
    assert "p95" in judge(slow, HEALTHY).reason
    assert judge(WindowStats(requests=100, errors=0, p95_ms=29.0), HEALTHY).action == "continue"
    # 50% worse but only 10 ms: noise, below the absolute floor.
    assert judge(WindowStats(requests=100, errors=0, p95_ms=0.9),
                 WindowStats(requests=100, errors=0, p95_ms=0.4)).action == "continue"
    assert judge(WindowStats(requests=5, errors=0, p95_ms=90.0), HEALTHY).action == "wait"


def test_thresholds_are_configurable() -> None:
    strict = RollbackThresholds(p95_relative=0.1, min_requests=1, p95_min_delta_ms=0)
    assert judge(WindowStats(requests=3, errors=0, p95_ms=23.0), HEALTHY, strict).action == \
        "rollback"


def _state(plan: list[int], interval_s: float = 10.0) -> RolloutState:
    return RolloutState(source=1, target=2, plan=plan, interval_s=interval_s, window_s=interval_s,
                        thresholds=RollbackThresholds(), started_at=0.0)


QUIET = WindowStats(requests=0, errors=0, p95_ms=None)


def _step(state: RolloutState, now: float, ready: int = 1, baseline_ready: int = 2,
          failure: str | None = None, candidate: WindowStats = QUIET,
          baseline: WindowStats = QUIET, desired: int = 2, max_replicas: int = 8) -> Step:
    return advance(state, now, target_ready=ready, baseline_ready=baseline_ready, min_replicas=0,
                   max_replicas=max_replicas, desired=desired, target_failure=failure,
                   candidate=candidate, baseline=baseline)


def test_a_canary_walks_its_plan_warming_before_each_stage() -> None:
    state = _state([10, 50, 100])
    step = _step(state, 0.0, ready=0)
    assert (step.action, step.replicas) == ("warm", 1)
    assert state.weight == 0
    step = _step(state, 1.0, ready=1)
    assert (step.action, step.weight) == ("shift", 10)
    assert apply(state, step, 1.0) and state.weight == 10 and state.judged_since == 1.0
    assert _step(state, 5.0, candidate=HEALTHY, baseline=HEALTHY).action == "hold"
    step = _step(state, 11.0, ready=1, baseline_ready=4, candidate=HEALTHY, baseline=HEALTHY)
    assert (step.action, step.weight, step.replicas) == ("warm", 50, 2)
    assert not apply(state, step, 11.0)
    assert state.phase == "warming" and state.weight == 10, "the old stage holds while warming"
    step = _step(state, 12.0, ready=2, baseline_ready=4)
    assert step.action == "shift" and apply(state, step, 12.0) and state.weight == 50
    step = _step(state, 22.0, ready=4, baseline_ready=4, candidate=HEALTHY, baseline=HEALTHY)
    assert (step.action, step.weight) == ("warm", 100)
    apply(state, step, 22.0)
    step = _step(state, 23.0, ready=4, baseline_ready=4)
    assert step.action == "shift" and apply(state, step, 23.0)
    step = _step(state, 23.0)
    assert step.action == "complete" and apply(state, step, 23.0)
    assert state.phase == "succeeded" and not state.active and state.weight == 100


def test_blue_green_switches_once_warm_and_scales_from_zero_with_nothing_warm() -> None:
    state = _state([100])
    assert _step(state, 0.0, ready=1, baseline_ready=3).replicas == 3
    assert _step(state, 0.0, ready=3, baseline_ready=3).action == "shift"
    assert warm_replicas(100, 0, 0) == 0, "a deployment at zero switches at once"
    assert warm_replicas(10, 0, 2) == 1 and warm_replicas(25, 4, 0) == 1
    assert _step(state, 0.0, ready=0, baseline_ready=0).action == "shift"


def test_a_failing_canary_is_rolled_back_but_only_after_it_had_traffic() -> None:
    state = _state([10, 100])
    failing = WindowStats(requests=100, errors=30, p95_ms=20.0)
    assert _step(state, 0.0, ready=0, candidate=failing, baseline=HEALTHY).action == "warm"
    apply(state, _step(state, 1.0), 1.0)
    step = _step(state, 2.0, candidate=failing, baseline=HEALTHY)
    assert step.action == "rollback" and "30.0%" in step.reason
    assert apply(state, step, 2.0) and state.phase == "rolled_back" and state.weight == 0
    broken = _state([10, 100])
    step = _step(broken, 0.0, failure="ImportError: no module named x")
    assert step.action == "rollback" and "cannot start" in step.reason


def test_the_judging_window_starts_with_the_first_traffic() -> None:
    state = _state([10, 100], interval_s=60.0)
    assert judging_window(state, 100.0) == 100.0
    apply(state, Step("shift", weight=10), 30.0)
    assert judging_window(state, 50.0) == 30.0
    assert judging_window(state, 200.0) == 140.0


def test_rollout_state_round_trips_through_json() -> None:
    state = _state([10, 25, 50, 75, 100])
    apply(state, Step("shift", weight=10), 5.0)
    copy = RolloutState.from_json(state.to_json())
    assert copy == state


def _watched(plan: list[int], watch_s: float = 30.0) -> RolloutState:
    state = _state(plan)
    state.watch_s = watch_s
    return state


def _switch(state: RolloutState, now: float, before: WindowStats,
            baseline_ready: int = 2) -> None:
    """Warm the target and switch it to its first stage, keeping ``before`` as the window the
    source had just then."""
    step = _step(state, now, ready=baseline_ready, baseline_ready=baseline_ready)
    assert step.action == "shift"
    assert apply(state, step, now, before)


def test_a_blue_green_switch_is_watched_with_the_previous_revision_kept_warm() -> None:
    state = _watched([100], watch_s=30.0)
    _switch(state, 100.0, HEALTHY, baseline_ready=3)
    assert (state.phase, state.weight, state.active) == ("watching", 100, True)
    assert state.baseline == HEALTHY and state.keep_warm == 3
    assert state.watch_ends_at == 130.0
    step = _step(state, 110.0, ready=3, baseline_ready=3, candidate=HEALTHY, desired=3)
    assert (step.action, step.replicas) == ("watch", 3)
    assert not apply(state, step, 110.0) and state.phase == "watching"
    step = _step(state, 130.0, candidate=HEALTHY)
    assert step.action == "complete" and apply(state, step, 130.0)
    assert state.phase == "succeeded" and state.weight == 100 and not state.active


def test_a_watched_revision_failing_30_percent_is_rolled_back_against_the_kept_window() -> None:
    state = _watched([100])
    _switch(state, 100.0, HEALTHY)
    # After the switch the source serves nothing: its live window is empty, so the judge
    # must use the one kept from before the switch.
    failing = WindowStats(requests=30, errors=10, p95_ms=20.0)
    step = _step(state, 105.0, candidate=failing, baseline=QUIET)
    assert step.action == "rollback" and "33.3%" in step.reason
    assert apply(state, step, 105.0) and state.phase == "rolled_back" and state.weight == 0
    slow = _watched([100])
    _switch(slow, 100.0, HEALTHY)
    step = _step(slow, 105.0, candidate=WindowStats(requests=50, errors=0, p95_ms=45.0))
    assert step.action == "rollback" and "p95" in step.reason


def test_the_watch_judges_against_the_kept_window_not_an_empty_one() -> None:
    noisy = WindowStats(requests=1000, errors=100, p95_ms=20.0)  # 10% errors before the switch
    state = _watched([100])
    _switch(state, 100.0, noisy)
    as_before = WindowStats(requests=100, errors=10, p95_ms=20.0)
    assert _step(state, 105.0, candidate=as_before, baseline=QUIET).action == "watch", \
        "no worse than the previous revision was: against an empty window it would roll back"


def test_the_previous_revision_stays_as_warm_as_the_deployment() -> None:
    state = _watched([100])
    _switch(state, 100.0, HEALTHY, baseline_ready=4)
    assert _step(state, 101.0, desired=6, max_replicas=12).replicas == 4, "no more than it had"
    assert _step(state, 101.0, desired=2).replicas == 2
    assert _step(state, 101.0, desired=0).replicas == 0, "a scale to zero takes it down too"
    assert _step(state, 101.0, desired=3, max_replicas=5).replicas == 2, "within max_replicas"
    assert _step(state, 101.0, desired=1, max_replicas=1).replicas == 0, "no room: cold"
    floor = advance(state, 101.0, target_ready=1, baseline_ready=0, min_replicas=1,
                    max_replicas=4, desired=0, target_failure=None, candidate=QUIET,
                    baseline=QUIET)
    assert floor.replicas == 1, "min_replicas holds"
    assert kept_warm(had=3, desired=0, min_replicas=0, max_replicas=4) == 0


def test_without_a_watch_the_switch_completes_at_once() -> None:
    state = _watched([100], watch_s=0.0)
    _switch(state, 100.0, HEALTHY)
    assert state.phase == "running" and state.baseline is None
    assert _step(state, 100.0).action == "complete"


def test_a_canary_is_watched_once_it_reaches_100() -> None:
    state = _watched([50, 100], watch_s=20.0)
    _switch(state, 0.0, QUIET)
    assert state.phase == "running" and state.baseline is None, "50% is a stage, not a watch"
    apply(state, _step(state, 10.0, candidate=HEALTHY, baseline=HEALTHY), 10.0)
    step = _step(state, 11.0, ready=2)
    assert (step.action, step.weight) == ("shift", 100)
    apply(state, step, 11.0, HEALTHY)
    assert state.phase == "watching" and state.baseline == HEALTHY
    assert _step(state, 30.0).action == "watch" and _step(state, 31.0).action == "complete"


def test_a_watching_rollout_round_trips_and_an_old_record_still_loads() -> None:
    state = _watched([100])
    _switch(state, 100.0, WindowStats(requests=40, errors=1, p95_ms=None))
    data = state.to_json()
    assert RolloutState.from_json(data) == state
    for key in ("watch_s", "baseline", "keep_warm"):
        del data[key]
    old = RolloutState.from_json(data)
    assert (old.watch_s, old.baseline, old.keep_warm) == (0.0, None, 0)
