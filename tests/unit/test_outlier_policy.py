"""Outlier ejection (resilience/outliers.py): consecutive failures, error ratios against the
siblings', the doubling back-off, the half-open probe and the share ejected at once."""

from __future__ import annotations

import pytest

from stratus.resilience.circuit import CircuitState
from stratus.resilience.outliers import OutlierDetector, OutlierSettings

SETTINGS = OutlierSettings(consecutive_failures=3, interval_s=10.0, min_requests=10,
                           ratio_margin=0.3, base_ejection_s=30.0, max_ejection_s=100.0,
                           max_ejected_share=0.5)


def detector(replicas: int = 4, settings: OutlierSettings = SETTINGS) -> OutlierDetector:
    outliers = OutlierDetector(settings, now=0.0)
    for key in range(replicas):
        outliers.add(key)
    return outliers


def fail(outliers: OutlierDetector, key: int, times: int, now: float) -> list[bool]:
    return [change.ejected for _ in range(times) for change in outliers.record(key, False, now)]


def test_consecutive_failures_eject_and_a_success_resets_the_count() -> None:
    outliers = detector()
    assert fail(outliers, 0, 2, 1.0) == []
    assert outliers.record(0, True, 1.0) == []  # the run is broken
    assert fail(outliers, 0, 2, 1.0) == []
    assert fail(outliers, 0, 1, 1.0) == [True]
    assert outliers.replicas[0].state is CircuitState.OPEN
    assert not outliers.available(0, 1.0) and outliers.available(1, 1.0)
    assert outliers.ejected == 1 and outliers.ejections_total == 1


def test_the_back_off_ends_in_one_probe_that_readmits_on_success() -> None:
    outliers = detector()
    fail(outliers, 0, 3, 0.0)
    assert not outliers.available(0, 29.9)
    assert outliers.available(0, 30.0)  # half-open: one request may go
    assert outliers.replicas[0].state is CircuitState.HALF_OPEN
    outliers.dispatched(0, "probe")
    assert not outliers.available(0, 30.1), "only one probe at a time"
    changes = outliers.record(0, True, 30.2, "probe")
    assert [(c.key, c.ejected) for c in changes] == [(0, False)]
    assert outliers.replicas[0].state is CircuitState.CLOSED and outliers.ejected == 0
    assert outliers.available(0, 30.3)


def test_a_failed_probe_doubles_the_back_off_up_to_the_cap() -> None:
    outliers = detector()
    fail(outliers, 0, 3, 0.0)
    until = []
    now = 0.0
    for _ in range(4):
        until.append(outliers.replicas[0].until - now)
        now = outliers.replicas[0].until
        assert outliers.available(0, now)
        outliers.dispatched(0, now)
        assert [c.ejected for c in outliers.record(0, False, now, now)] == [True]
    assert until == [30.0, 60.0, 100.0, 100.0]
    assert outliers.ejected == 1, "a re-opened replica is still one ejected replica"


def test_an_abandoned_probe_lets_another_request_probe() -> None:
    outliers = detector()
    fail(outliers, 0, 3, 0.0)
    assert outliers.available(0, 31.0)
    outliers.dispatched(0, "probe")
    outliers.abandoned(0, "probe")
    assert outliers.available(0, 31.5)


def test_only_the_probe_decides_a_half_open_replica() -> None:
    """Requests sent before the ejection may end while the replica is half-open, with its
    probe out: their answers are old news, and must neither readmit it nor eject it again."""
    outliers = detector()
    fail(outliers, 0, 3, 0.0)  # ejected, with requests "early" and "late" still out on it
    assert outliers.available(0, 30.0)
    outliers.dispatched(0, "probe")
    assert outliers.record(0, True, 30.1, "early") == [], "not the probe: it decides nothing"
    assert outliers.record(0, False, 30.2, "late") == []
    outliers.abandoned(0, "early")
    assert outliers.replicas[0].state is CircuitState.HALF_OPEN
    assert not outliers.available(0, 30.3), "the probe is still out"
    changes = outliers.record(0, True, 30.4, "probe")
    assert [(c.key, c.ejected) for c in changes] == [(0, False)]
    assert outliers.replicas[0].state is CircuitState.CLOSED


def test_a_request_beside_the_probe_does_not_take_its_place() -> None:
    """When every replica is ejected the picker uses them all (the panic threshold): a
    second request to a half-open replica is not a second probe."""
    outliers = detector()
    fail(outliers, 0, 3, 0.0)
    outliers.available(0, 30.0)
    outliers.dispatched(0, "probe")
    outliers.dispatched(0, "beside")
    assert outliers.record(0, False, 30.1, "beside") == []
    assert [c.ejected for c in outliers.record(0, False, 30.2, "probe")] == [True]


def test_at_most_the_share_is_ejected_and_a_lone_replica_never_is() -> None:
    outliers = detector(4)
    for key in range(4):
        fail(outliers, key, 3, 1.0)
    assert outliers.ejected == 2  # half of four
    lone = detector(1)
    assert fail(lone, 0, 10, 1.0) == [] and lone.available(0, 1.0)


def test_an_error_ratio_that_stands_out_from_the_siblings_ejects_at_the_interval() -> None:
    outliers = detector(3)
    for i in range(20):  # replica 0 fails every other request: never 3 in a row
        outliers.record(0, i % 2 == 0, 5.0)
        outliers.record(1, i % 10 != 0, 5.0)  # 10% errors
        outliers.record(2, True, 5.0)
    assert outliers.ejected == 0
    changes = outliers.record(2, True, 10.0)  # the interval ends
    assert [(c.key, c.ejected) for c in changes] == [(0, True)]
    assert "error ratio 50%" in changes[0].reason and "5%" in changes[0].reason


def test_a_shared_error_ratio_or_too_few_requests_ejects_nobody() -> None:
    outliers = detector(2)
    for i in range(30):
        outliers.record(0, i % 2 == 0, 1.0)
        outliers.record(1, i % 2 == 1, 1.0)
    assert outliers.record(0, True, 11.0) == []  # both at 50%: nothing stands out
    few = detector(2)
    for i in range(5):
        few.record(0, i % 2 == 0, 1.0)
        few.record(1, True, 1.0)
    assert few.record(1, True, 11.0) == []


def test_late_answers_from_before_the_ejection_change_nothing() -> None:
    outliers = detector()
    fail(outliers, 0, 3, 0.0)
    assert outliers.record(0, False, 1.0) == [] and outliers.record(0, True, 1.0) == []
    assert outliers.replicas[0].state is CircuitState.OPEN


def test_forgetting_an_ejected_replica_frees_its_place() -> None:
    outliers = detector(2)
    fail(outliers, 0, 3, 0.0)
    assert outliers.ejected == 1
    outliers.forget(0)
    assert outliers.ejected == 0 and 0 not in outliers.replicas


def test_a_replica_healthy_long_enough_starts_again_from_the_base_back_off() -> None:
    outliers = detector()
    fail(outliers, 0, 3, 0.0)
    outliers.available(0, 30.0)
    outliers.dispatched(0, 1)
    outliers.record(0, True, 30.0, 1)
    fail(outliers, 0, 3, 40.0)  # soon after: doubled
    assert outliers.replicas[0].until == pytest.approx(100.0)
    outliers.available(0, 100.0)
    outliers.dispatched(0, 2)
    outliers.record(0, True, 100.0, 2)
    fail(outliers, 0, 3, 250.0)  # healthy for max_ejection_s: from the base again
    assert outliers.replicas[0].until == pytest.approx(280.0)


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        OutlierSettings(base_ejection_s=60.0, max_ejection_s=30.0)
    with pytest.raises(ValueError):
        OutlierSettings(consecutive_failures=0)
