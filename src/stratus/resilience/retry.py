"""Retries of lost work, pure: whether one failed attempt may be tried again, and the retry
budget that caps a deployment's retries at a share of its requests (injected time)."""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass

from stratus.errors import ReplicaLost, RequestTimeout, StratusError
from stratus.resilience_spec import RetrySpec

BUDGET_WINDOW_S = 10.0  # requests and retries are counted over this much recent time


class Failure(enum.StrEnum):
    """The failures a deployment's ``retries.on`` may name: what happened to the request.
    Whether it reached a handler is another question, which ``denial`` asks of each."""

    CONNECT = "connect"  # the request could not be sent: the replica was already gone
    REPLICA_LOST = "replica_lost"  # the replica died (kill, crash, exit) while the request was out
    TIMEOUT = "timeout"  # no answer within the timeout


class Denied(enum.StrEnum):
    """Why a failed attempt was not tried again (the access log's and the metric's reason)."""

    NOT_RETRYABLE = "not_retryable"  # a failure of another kind, or one ``on`` leaves out
    DELIVERED = "delivered"  # it may have reached the handler, which is not idempotent
    STREAMED = "streamed"  # part of the answer has already gone to the client
    ATTEMPTS = "attempts"  # no attempt left
    DEADLINE = "deadline"  # the request's deadline has passed
    BUDGET = "budget"  # the deployment's retry budget is spent


def failure_of(error: StratusError) -> Failure | None:
    """The kind of ``error`` for the retry rules; None for a failure no retry can mend (the
    handler raised, the request was bad, the handler ran out of memory: it would again).

    Only a request that reached the handler can have run it out of memory: one the replica
    never took was lost to another request's doing, so it is a loss like any other."""
    if isinstance(error, ReplicaLost):
        if not error.sent:
            return Failure.CONNECT
        if error.reached_handler and error.status != ReplicaLost.status:
            return None  # out of memory in this request's handler: its own doing
        return Failure.REPLICA_LOST
    if isinstance(error, RequestTimeout):
        return Failure.TIMEOUT
    return None


def reached_handler(error: StratusError) -> bool:
    """Whether the request may have started in the handler. Only a replica that is known
    dead before it took the request proves it did not: a timed-out request was sent to a
    replica that still lives, and may start it later."""
    return not isinstance(error, ReplicaLost) or error.reached_handler


@dataclass(frozen=True, slots=True)
class Attempted:
    """What one request went through so far, for ``denial``."""

    attempts: int  # made so far, the failed one included
    idempotent_request: bool  # the client sent an Idempotency-Key
    streamed: bool  # a chunk of the answer already went to the client
    time_left: float | None  # until the request's deadline; None without one


def denial(spec: RetrySpec, error: StratusError, attempted: Attempted) -> Denied | None:
    """Why the failed attempt must not be tried again, or None if it may be (budget aside).

    A request that never reached a handler is always safe to send again; one that may have
    is sent again only when the deployment declares itself idempotent or the client gave an
    Idempotency-Key. A stream that already sent part of its answer is never retried.
    """
    failure = failure_of(error)
    if failure is None or failure.value not in spec.on:
        return Denied.NOT_RETRYABLE
    if attempted.streamed:
        return Denied.STREAMED
    if reached_handler(error) and not (spec.idempotent or attempted.idempotent_request):
        return Denied.DELIVERED
    if attempted.attempts >= spec.attempts:
        return Denied.ATTEMPTS
    # A timeout at the caller's deadline is final, whatever the clock says now: the event
    # loop may run a timer a hair before its time, which left a retry of no time at all.
    if (attempted.time_left is not None and attempted.time_left <= 0) \
            or (isinstance(error, RequestTimeout) and error.by_caller):
        return Denied.DEADLINE
    return None


class RetryBudget:
    """A deployment's retries as a share of its requests, as Finagle's and gRPC's budgets:
    over the last ``BUDGET_WINDOW_S`` seconds, retries may number ``ratio`` times the
    requests that arrived, plus a floor of ``min_per_s`` a second so a quiet deployment can
    still retry. A sick deployment then sees at most ``1 + ratio`` times its load, not twice.

    Counts are kept per whole second of the injected clock, so the cost is O(1) a call.
    """

    __slots__ = ("_buckets", "_requests", "_retries", "window_s")

    def __init__(self, window_s: float = BUDGET_WINDOW_S) -> None:
        self.window_s = window_s
        self._buckets: deque[list[int]] = deque()  # [second, requests, retries], oldest first
        self._requests = 0
        self._retries = 0

    def _bucket(self, now: float) -> list[int]:
        second = math.floor(now)
        buckets = self._buckets
        horizon = second - math.ceil(self.window_s)
        while buckets and buckets[0][0] <= horizon:
            _, requests, retries = buckets.popleft()
            self._requests -= requests
            self._retries -= retries
        if not buckets or buckets[-1][0] != second:
            buckets.append([second, 0, 0])
        return buckets[-1]

    def request(self, now: float) -> None:
        """A request arrived (its first attempt: retries are not requests)."""
        self._bucket(now)[1] += 1
        self._requests += 1

    def try_retry(self, now: float, ratio: float, min_per_s: float) -> bool:
        """Take one retry from the budget if it has one left."""
        bucket = self._bucket(now)
        allowed = ratio * self._requests + min_per_s * self.window_s
        if self._retries + 1 > allowed:
            return False
        bucket[2] += 1
        self._retries += 1
        return True

    def counts(self, now: float) -> tuple[int, int]:
        """(requests, retries) within the window."""
        self._bucket(now)
        return self._requests, self._retries
