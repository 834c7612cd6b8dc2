"""The async retry policy: what is retried, and when (exponential backoff with full jitter)."""

from __future__ import annotations

import random

import pytest

from stratus.errors import BadRequest, HandlerError, RateLimited, ReplicaLost, RequestTimeout
from stratus.queue.retry import RetryPolicy


@pytest.mark.parametrize("error", [HandlerError("x"), ReplicaLost("x"), RequestTimeout("x"),
                                   RateLimited("x")])
def test_server_side_failures_and_overload_are_retried(error: Exception) -> None:
    assert RetryPolicy().retryable(error.status, error.type)  # type: ignore[attr-defined]


def test_bad_input_is_not_retried() -> None:
    assert not RetryPolicy().retryable(BadRequest.status, BadRequest.type)
    assert not RetryPolicy().retryable(404, "not_found")
    assert RetryPolicy().next_attempt_at(0.0, 1, 1e9, 400, "invalid_request",
                                         random.Random(1)) is None


def test_the_delay_is_full_jitter_under_a_doubling_ceiling() -> None:
    policy = RetryPolicy(max_attempts=10, base_s=1.0, cap_s=8.0)
    rng = random.Random(7)
    for attempt, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (6, 8.0)):
        delays = [policy.delay_s(attempt, rng) for _ in range(2000)]
        assert min(delays) >= 0.0 and max(delays) <= ceiling
        # Uniform over [0, ceiling]: the mean sits near the middle, not at the top.
        assert abs(sum(delays) / len(delays) - ceiling / 2) < ceiling * 0.05


def test_attempts_and_the_event_age_bound_the_retries() -> None:
    policy = RetryPolicy(max_attempts=3, base_s=1.0, cap_s=10.0)
    rng = random.Random(3)
    at = policy.next_attempt_at(100.0, 1, 1e9, 500, "handler_error", rng)
    assert at is not None and 100.0 <= at <= 101.0
    assert policy.next_attempt_at(100.0, 3, 1e9, 500, "handler_error", rng) is None
    # A retry that could only start after the event's age limit is not scheduled.
    assert RetryPolicy(5, 100.0, 100.0).next_attempt_at(
        100.0, 2, 100.0001, 500, "handler_error", random.Random(1)) is None
