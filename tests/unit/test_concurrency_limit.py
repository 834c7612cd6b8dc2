"""The gradient concurrency limit (resilience/concurrency_limit.py) on an injected clock: it
grows while latency holds and the limit is used, and is cut when queueing makes latency grow."""

from __future__ import annotations

import pytest

from stratus.errors import BadRequest
from stratus.resilience.circuit import CircuitState, init_backoff, init_circuit
from stratus.resilience.concurrency_limit import ConcurrencyLimit, LimitSettings
from stratus.resilience.priority import SHARES, Priority, parse_priority

SETTINGS = LimitSettings(initial_limit=20, min_limit=2, max_limit=200, tolerance=1.5,
                         window_s=1.0, min_samples=4, baseline_window_s=30.0, smoothing=1.0)


def window(limit: ConcurrencyLimit, start: float, latency: float, service: float,
           requests: int = 10) -> float:
    """``requests`` admitted together, ending within one window, the last as it closes;
    returns the new time."""
    admitted = sum(limit.try_admit() for _ in range(requests))
    end = start + SETTINGS.window_s
    for i in range(admitted):
        limit.done(end if i == admitted - 1 else start + 0.5, latency, service)
    return end


def test_admits_up_to_the_limit_then_refuses() -> None:
    limit = ConcurrencyLimit(SETTINGS, 0.0)
    assert [limit.try_admit() for _ in range(21)].count(True) == 20
    limit.done(0.1)
    assert limit.try_admit() and not limit.try_admit()


def test_the_limit_grows_while_latency_holds_and_it_is_used() -> None:
    limit = ConcurrencyLimit(SETTINGS, 0.0)
    window(limit, 0.0, 0.010, 0.010, requests=20)
    assert limit.limit == pytest.approx(20 + 20 ** 0.5)
    assert limit.baseline_s == pytest.approx(0.010) and limit.gradient == 1.0


def test_an_idle_limit_does_not_grow() -> None:
    limit = ConcurrencyLimit(SETTINGS, 0.0)
    window(limit, 0.0, 0.010, 0.010, requests=5)  # 5 < half of 20
    assert limit.limit == 20


def test_queueing_cuts_the_limit_in_proportion_and_at_most_by_half() -> None:
    limit = ConcurrencyLimit(SETTINGS, 0.0)
    now = window(limit, 0.0, 0.010, 0.010, requests=20)
    before = limit.limit
    # The same service time, but each request also waited 20 ms: 3x the latency.
    now = window(limit, now, 0.030, 0.010)
    assert limit.gradient == pytest.approx(0.5)
    assert limit.limit == pytest.approx(before * 0.5)
    before = limit.limit
    window(limit, now, 0.020, 0.010)  # 1.5 x 10 / 20
    assert limit.limit == pytest.approx(before * 0.75)


def test_latency_within_the_tolerance_is_not_queueing() -> None:
    limit = ConcurrencyLimit(SETTINGS, 0.0)
    now = window(limit, 0.0, 0.010, 0.010, requests=20)
    before = limit.limit
    window(limit, now, 0.014, 0.010, requests=20)
    assert limit.limit > before


def test_the_limit_stays_within_its_bounds() -> None:
    limit = ConcurrencyLimit(SETTINGS, 0.0)
    now = 0.0
    now = window(limit, now, 0.010, 0.010)
    for _ in range(20):
        now = window(limit, now, 1.0, 0.010)
    assert limit.limit == SETTINGS.min_limit
    grown = ConcurrencyLimit(LimitSettings(initial_limit=190, max_limit=200, window_s=1.0,
                                           min_samples=4, smoothing=1.0), 0.0)
    window(grown, 0.0, 0.01, 0.01, requests=190)
    assert grown.limit == 200


def test_a_long_overload_does_not_teach_it_that_queueing_is_normal() -> None:
    """The baseline comes from service times, which a queue does not lengthen."""
    limit = ConcurrencyLimit(SETTINGS, 0.0)
    now = window(limit, 0.0, 0.010, 0.010)
    for _ in range(100):  # 100 s of requests that all queue
        now = window(limit, now, 0.040, 0.010)
    assert limit.baseline_s == pytest.approx(0.010)
    assert limit.limit == SETTINGS.min_limit


def test_the_baseline_follows_a_slower_handler_after_its_window() -> None:
    limit = ConcurrencyLimit(SETTINGS, 0.0)
    now = window(limit, 0.0, 0.010, 0.010)
    for _ in range(40):  # a new handler twice as slow, unqueued
        now = window(limit, now, 0.020, 0.020)
    assert limit.baseline_s == pytest.approx(0.020)
    assert limit.gradient == 1.0


def test_no_update_before_a_window_with_enough_samples() -> None:
    limit = ConcurrencyLimit(SETTINGS, 0.0)
    for _ in range(3):
        limit.try_admit()
        limit.done(5.0, 1.0, 0.01)
    assert limit.baseline_s is None and limit.limit == 20
    limit.try_admit()
    limit.done(5.0)  # a request without a sample (shed later, cold, failed) only leaves
    assert limit.inflight == 0 and limit.baseline_s is None


def test_priorities_use_their_share_of_the_limit() -> None:
    limit = ConcurrencyLimit(SETTINGS, 0.0)
    assert sum(limit.try_admit(SHARES[Priority.LOW]) for _ in range(20)) == 10
    assert sum(limit.try_admit(SHARES[Priority.NORMAL]) for _ in range(20)) == 8
    assert sum(limit.try_admit(SHARES[Priority.CRITICAL]) for _ in range(20)) == 2
    assert parse_priority(None) is Priority.NORMAL
    assert parse_priority(" Critical") is Priority.CRITICAL
    with pytest.raises(BadRequest, match="x-stratus-priority must be"):
        parse_priority("urgent")


def test_the_async_routes_integer_priorities_mean_the_same_by_their_sign() -> None:
    # One header, X-Stratus-Priority, on every route: the async queue's integers (higher
    # first, default 0) shed as their sign says.
    assert [parse_priority(v) for v in ("-5", "0", "7", "1000")] == [
        Priority.LOW, Priority.NORMAL, Priority.CRITICAL, Priority.CRITICAL]
    with pytest.raises(BadRequest, match="from -1000 to 1000"):
        parse_priority("2.5")
    with pytest.raises(BadRequest, match="between -1000 and 1000"):
        parse_priority("1001")


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        LimitSettings(min_limit=10, max_limit=5)
    with pytest.raises(ValueError):
        LimitSettings(tolerance=0.5)


def test_the_start_up_circuit_and_its_back_off() -> None:
    assert [init_backoff(n, 300) for n in (1, 2, 3, 10)] == [1.0, 2.0, 4.0, 300.0]
    assert init_circuit(0, 0.0, 5.0) is CircuitState.CLOSED
    assert init_circuit(2, 10.0, 5.0) is CircuitState.OPEN
    assert init_circuit(2, 10.0, 10.0) is CircuitState.HALF_OPEN
