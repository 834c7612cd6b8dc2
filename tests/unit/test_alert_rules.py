"""Alert rules over windows of outcomes, the latency z-score, and alert state transitions."""

from __future__ import annotations

import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stratus.dispatch.outcomes import Outcome
from stratus.observe.alert_rules import (
    AlertsConfig,
    AnomalyConfig,
    LatencyBaseline,
    Sample,
    latency_anomaly,
    next_state,
    rule_value,
    zscore,
)
from stratus.observe.alerts import AlertManager


def _samples(*spec: tuple[float, bool, float, bool]) -> list[Sample]:
    return [Sample(*entry) for entry in spec]


def test_rule_values_count_only_the_window() -> None:
    samples = _samples((0, False, 0.5, True), (10, False, 0.01, False), (11, True, 0.02, True),
                       (12, True, 0.03, False), (13, True, 0.04, False))
    assert rule_value("error_ratio", samples, since=10, min_requests=4) == 0.25
    assert rule_value("cold_start_rate", samples, since=10, min_requests=4) == 0.25
    assert rule_value("p95_latency", samples, since=10, min_requests=4) == pytest.approx(40.0)
    assert rule_value("error_ratio", samples, since=0, min_requests=1) == 0.4
    assert rule_value("error_ratio", samples, since=11, min_requests=4) is None  # too few
    assert rule_value("error_ratio", [], since=0, min_requests=1) is None


def test_next_state_holds_without_enough_requests_and_resolves_without_any() -> None:
    assert next_state(False, 0.6, 0.5, empty=False) is True
    assert next_state(True, 0.5, 0.5, empty=False) is False  # strictly above fires
    assert next_state(True, None, 0.5, empty=False) is True  # too few to judge: unchanged
    assert next_state(False, None, 0.5, empty=False) is False
    assert next_state(True, None, 0.5, empty=True) is False  # no traffic: nothing failing


def test_zscore_by_hand() -> None:
    baseline = [1.0, 2.0, 3.0, 4.0, 5.0]  # mean 3, population std sqrt(2)
    assert zscore(baseline, 3.0) == 0.0
    assert zscore(baseline, 3.0 + 3 * 2**0.5) == pytest.approx(3.0)
    assert zscore([2.0, 2.0], 2.5, min_std=0.25) == pytest.approx(2.0)  # a flat series
    assert zscore([1.0], 5.0) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0001, 10.0), min_size=3, max_size=400), st.floats(0.0, 20.0))
def test_running_baseline_matches_the_pure_zscore(values: list[float], x: float) -> None:
    baseline = LatencyBaseline(size=100, min_samples=2)
    for value in values:
        baseline.add(value)
    expected = zscore(values[-100:], x)
    got = baseline.score(x)
    assert expected is not None and got is not None
    if statistics.pstdev(values[-100:]) > 1e-6:  # a flat series divides by rounding noise
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_baseline_flags_a_spike_in_a_hand_made_series() -> None:
    baseline = LatencyBaseline(size=100, min_samples=30, min_std=0.001)
    series = [0.010 + 0.002 * ((i * 7) % 5 - 2) / 2 for i in range(100)]  # 8..12 ms
    assert all(baseline.observe(x) is None for x in series[:30])  # warming up
    assert all((z := baseline.observe(x)) is not None and z < 3 for x in series[30:])
    spike = baseline.observe(0.050)
    assert spike is not None and spike > 3
    assert len(baseline) == 100


def _outcome(at: float, ok: bool = True, latency_s: float = 0.01, cold: bool = False,
             deployment: str = "d", shadow: bool = False) -> Outcome:
    return Outcome(namespace="ns", deployment=deployment, revision=1, ok=ok, latency_s=latency_s,
                   shadow=shadow, at=at, status=200 if ok else 500, cold_start=cold)


def test_manager_fires_and_resolves_per_deployment() -> None:
    config = AlertsConfig.model_validate({
        "rules": [{"name": "errors", "kind": "error_ratio", "threshold": 0.5, "window_s": 10,
                   "min_requests": 3}],
        "anomaly": {"enabled": False},
    })
    manager = AlertManager(config)
    for t in range(4):
        manager.observe(_outcome(100 + t, ok=False))
        manager.observe(_outcome(100 + t, ok=True, deployment="healthy"))
        manager.observe(_outcome(100 + t, ok=False, deployment="healthy", shadow=True))
    fired = manager.evaluate(104)
    assert [(a.deployment, a.state, a.value) for a in fired] == [("d", "firing", 1.0)]
    assert manager.evaluate(105) == []  # still firing: nothing new to deliver
    for t in range(8):
        manager.observe(_outcome(106 + t / 10))
    resolved = manager.evaluate(107)
    assert [(a.deployment, a.state) for a in resolved] == [("d", "resolved")]
    assert resolved[0] is fired[0] and resolved[0].resolved_at == 107
    assert manager.view()[0]["state"] == "resolved"


def test_manager_resolves_when_traffic_stops_and_forgets_quiet_deployments() -> None:
    config = AlertsConfig.model_validate({"rules": [
        {"name": "slow", "kind": "p95_latency", "threshold": 100, "window_s": 5, "min_requests": 2}]})
    manager = AlertManager(config)
    manager.observe(_outcome(10, latency_s=0.5))
    manager.observe(_outcome(11, latency_s=0.5))
    assert [a.message for a in manager.evaluate(12)] == ["ns/d: p95 latency 500.0 ms (threshold 100 ms)"]
    assert [a.state for a in manager.evaluate(17)] == ["resolved"]
    manager.evaluate(18)
    assert manager._windows == {}


def test_latency_anomaly_fires_then_resolves_after_a_quiet_spell() -> None:
    config = AlertsConfig.model_validate({"anomaly": {"window": 50, "min_samples": 20,
                                                      "min_std_ms": 1, "quiet_s": 5}})
    manager = AlertManager(config)
    for i in range(40):
        manager.observe(_outcome(i / 10, latency_s=0.010 + 0.001 * (i % 3)))
    assert manager.evaluate(4.0) == []
    manager.observe(_outcome(4.1, latency_s=0.200))
    fired = manager.evaluate(4.5)
    assert [(a.name, a.state) for a in fired] == [("latency_anomaly", "firing")]
    assert fired[0].value is not None and fired[0].value > 3
    assert manager.evaluate(8.0) == []
    assert [a.state for a in manager.evaluate(9.2)] == ["resolved"]


DEFAULTS = AnomalyConfig.model_validate({})


def _baseline(latencies_ms: list[float]) -> LatencyBaseline:
    baseline = LatencyBaseline(DEFAULTS.window, DEFAULTS.min_samples, DEFAULTS.min_std_ms / 1000)
    for latency in latencies_ms:
        baseline.add(latency / 1000)
    return baseline


def test_a_few_milliseconds_over_a_fast_baseline_is_no_anomaly() -> None:
    """A hello-world's jitter: ~1 ms answers, then 6 ms and 40 ms ones. Each is many standard
    deviations out, yet under the 100 ms floor."""
    baseline = _baseline([1.0 + 0.05 * (i % 5) for i in range(60)])
    for latency_ms in (6.0, 40.0, 99.0):
        z = baseline.score(latency_ms / 1000)
        assert z is not None and z > DEFAULTS.z
        assert latency_anomaly(baseline, latency_ms / 1000, DEFAULTS) is None


def test_over_the_floor_but_near_the_baseline_is_no_anomaly() -> None:
    """A 200 ms model at 260 ms: past the floor and far out for its tight spread, but not 3x."""
    baseline = _baseline([200.0 + (i % 3) for i in range(60)])
    assert latency_anomaly(baseline, 0.260, DEFAULTS) is None


def test_a_real_slowdown_is_an_anomaly() -> None:
    baseline = _baseline([1.0 + 0.05 * (i % 5) for i in range(60)])
    z = latency_anomaly(baseline, 0.300, DEFAULTS)
    assert z is not None and z > DEFAULTS.z
    slow = _baseline([200.0 + (i % 3) for i in range(60)])
    assert latency_anomaly(slow, 0.700, DEFAULTS) is not None  # 3.5x a 200 ms baseline


def test_the_floor_and_ratio_are_configurable() -> None:
    strict = AnomalyConfig.model_validate({"min_latency_ms": 5, "min_ratio": 2})
    assert latency_anomaly(_baseline([1.0] * 60), 0.006, strict) is not None
    off = AnomalyConfig.model_validate({"min_latency_ms": 0, "min_ratio": 1})
    assert latency_anomaly(_baseline([1.0] * 60), 0.0045, off) is not None  # the old behaviour
    with pytest.raises(ValueError):
        AnomalyConfig.model_validate({"min_ratio": 0.5})


def test_cold_start_requests_are_not_judged_as_anomalies() -> None:
    manager = AlertManager(AlertsConfig.model_validate({}))
    for i in range(60):
        manager.observe(_outcome(i / 10, latency_s=0.001))
    manager.observe(_outcome(6.1, latency_s=0.500, cold=True))  # waited for a replica to start
    assert manager.evaluate(6.5) == []
    manager.observe(_outcome(6.6, latency_s=0.500))
    assert [a.name for a in manager.evaluate(7.0)] == ["latency_anomaly"]


def test_one_shot_event_shows_as_firing_for_its_hold() -> None:
    manager = AlertManager(AlertsConfig.model_validate({"event_hold_s": 60}))
    manager.one_shot("rollout_rolled_back", "ns", "d", "revision 2 rolled back to 1: errors")
    shown = manager.view()
    assert shown[0]["name"] == "rollout_rolled_back" and shown[0]["state"] == "firing"
    assert shown[0]["kind"] == "event" and "revision 2" in shown[0]["message"]
    manager.evaluate(shown[0]["since"] + 61)
    assert manager.view()[0]["state"] == "resolved"


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        AlertsConfig.model_validate({"rules": [{"name": "a", "kind": "p99", "threshold": 1}]})
    with pytest.raises(ValueError, match="unique"):
        AlertsConfig.model_validate({"rules": [
            {"name": "a", "kind": "error_ratio", "threshold": 0.1},
            {"name": "a", "kind": "p95_latency", "threshold": 100}]})
    with pytest.raises(ValueError):
        AlertsConfig.model_validate({"webhook": {"url": "http://x", "retries": -1}})
