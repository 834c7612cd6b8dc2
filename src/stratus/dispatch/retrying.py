"""Retries of lost work on the request path: one request's attempts, and each deployment's
retry budget. The rules (what may be retried, how many) are ``resilience/retry.py``'s."""

from __future__ import annotations

import logging
from typing import Any

from stratus.dispatch.channel import ChunkSink
from stratus.dispatch.pool import PoolReplica, RevisionPool
from stratus.errors import StratusError
from stratus.resilience.retry import Attempted, Denied, RetryBudget, denial, failure_of
from stratus.resilience_spec import RetrySpec
from stratus.telemetry import tracing

log = logging.getLogger("stratus.dispatch")


class Attempts:
    """One request's attempts. After a failed one, ``again`` says whether to send it again
    (to another replica: the dispatcher has the pool skip the one that failed)."""

    __slots__ = ("budget", "count", "deadline", "denied", "idempotent_request", "spec",
                 "streamed")

    def __init__(self, spec: RetrySpec, budget: RetryBudget, idempotent_request: bool,
                 deadline: float | None) -> None:
        self.spec = spec
        self.budget = budget
        self.idempotent_request = idempotent_request
        self.deadline = deadline
        self.count = 1
        self.streamed = False  # a chunk of the answer reached the caller
        self.denied: Denied | None = None  # why the last failure was not retried

    @property
    def resends_delivered(self) -> bool:
        """A request that reached the handler may be sent again: the deployment is idempotent
        or the client gave an Idempotency-Key."""
        return self.spec.idempotent or self.idempotent_request

    @property
    def wants_ack(self) -> bool:
        """Whether the replica must say when its handler takes the request: only when that
        decides a retry (a request that may be resent anyway needs no proof)."""
        return not self.resends_delivered

    def watch(self, sink: ChunkSink) -> ChunkSink:
        """``sink``, noting that part of the answer went out: such a request is never resent.
        Every stream that may be retried needs it, idempotent or not when it began: ``again``
        reads the deployment's settings as they are when an attempt fails."""
        def forward(kind: int, payload: Any) -> None:
            self.streamed = True
            sink(kind, payload)
        return forward

    def again(self, pool: RevisionPool, replica: PoolReplica | None, error: StratusError,
              now: float) -> bool:
        spec = pool.limits.retries  # the deployment's settings now: a PATCH applies at once
        self.spec = spec
        time_left = self.deadline - now if self.deadline is not None else None
        denied = denial(spec, error, Attempted(self.count, self.idempotent_request,
                                               self.streamed, time_left))
        if denied is None and not self.budget.try_retry(now, spec.budget, spec.min_per_s):
            denied = Denied.BUDGET
        self.denied = denied
        if denied is not None:
            if denied is Denied.BUDGET:
                log.warning("retry budget of %s/%s spent: request failed with %s", pool.namespace,
                            pool.deployment, error.type)
            return False
        self.count += 1
        failure = failure_of(error)
        current = tracing.current_span()
        if current.is_recording():
            current.add_event("stratus.retry", {
                "stratus.attempt": self.count, "stratus.failure": str(failure),
                "stratus.replica_id": replica.replica_id if replica is not None else ""})
        return True


class Retries:
    """The dispatcher's side of retries: a budget per deployment, and the attempts of each
    request that may be retried."""

    def __init__(self) -> None:
        self.budgets: dict[tuple[str, str], RetryBudget] = {}

    def begin(self, pool: RevisionPool, idempotent_request: bool, deadline: float | None,
              now: float) -> Attempts | None:
        """Count a request into its deployment's budget; None when it may not be retried at
        all (one attempt only), which spares the request path the rest.

        Called once the request has its first replica: a request shed by the adaptive limit
        or a full queue, or never given a slot, loaded no replica, and counting it would let
        an overloaded deployment retry more the more it refuses."""
        key = (pool.namespace, pool.deployment)
        budget = self.budgets.get(key)
        if budget is None:
            budget = self.budgets[key] = RetryBudget()
        budget.request(now)
        spec = pool.limits.retries
        if spec.attempts <= 1:
            return None
        return Attempts(spec, budget, idempotent_request, deadline)

    def forget(self, namespace: str, deployment: str) -> None:
        self.budgets.pop((namespace, deployment), None)
