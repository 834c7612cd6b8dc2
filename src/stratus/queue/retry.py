"""The retry policy of asynchronous work, pure: which failures are retried, and when the next
attempt may start (exponential backoff with full jitter, as AWS's architecture blog names it)."""

from __future__ import annotations

import random
from dataclasses import dataclass

# Errors of the request itself: running it again cannot help (a 4xx-class error), so they end
# the invocation as FAILED at once, not dead-lettered after retries.
_NOT_RETRIED_STATUS = range(400, 500)
_RETRIED_4XX = frozenset({"overloaded", "rate_limited", "quota_exceeded", "body_timeout"})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3  # as Lambda's async invocation: the first try and 2 retries
    base_s: float = 1.0
    cap_s: float = 300.0

    def retryable(self, status: int, error_type: str) -> bool:
        """A handler error, a timeout, a lost replica, an overload: yes; bad input: no."""
        if error_type in _RETRIED_4XX:
            return True
        return status not in _NOT_RETRIED_STATUS

    def delay_s(self, attempt: int, rng: random.Random) -> float:
        """Before attempt ``attempt + 1``, after ``attempt`` failed ones (1-based): uniform in
        [0, min(cap, base * 2^(attempt-1))]. Full jitter spreads a burst of failures out
        instead of retrying them in lockstep."""
        ceiling = min(self.cap_s, self.base_s * (2.0 ** max(0, attempt - 1)))
        return rng.uniform(0.0, ceiling)

    def next_attempt_at(self, now: float, attempts: int, expires_at: float, status: int,
                        error_type: str, rng: random.Random) -> float | None:
        """When the next attempt may start, or None when there is none: the error is not
        retried, the attempts are spent, or the next one would start after the event's age
        limit."""
        if not self.retryable(status, error_type) or attempts >= self.max_attempts:
            return None
        at = now + self.delay_s(attempts, rng)
        return at if at < expires_at else None
