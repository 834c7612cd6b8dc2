"""One revision's replicas and its bounded queue of held requests.

The pool hands out replica slots (a slot is one of a replica's ``max_concurrency``
concurrent requests). A request that finds no free slot waits in the queue; when none
of the replicas is ready, that wait is the activator's hold during a cold start.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from stratus.dispatch.admission import Admission
from stratus.dispatch.channel import ReplicaChannel
from stratus.dispatch.ejection import Ejection
from stratus.dispatch.load import LoadRecorder, MetricSample
from stratus.dispatch.outcomes import OutcomeLog
from stratus.dispatch.picker import power_of_two_choices
from stratus.errors import DeploymentFailed, RequestTimeout, Shed, StratusError, Unavailable
from stratus.resilience.priority import Priority
from stratus.resilience_spec import RetrySpec


class ReplicaState(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"


@dataclass(eq=False)
class PoolReplica:
    replica_id: str
    created_at: float
    pool: RevisionPool  # the owner, whose queue a freed slot serves
    state: ReplicaState = ReplicaState.STARTING
    channel: ReplicaChannel | None = None
    pid: int | None = None
    inflight: int = 0
    ready_at: float | None = None
    init_ms: float | None = None
    last_used: float = 0.0  # when it last finished a request (monotonic): eviction order
    stuck_since: list[float] = field(default_factory=list)  # start times of timed-out requests

    def load(self) -> int:
        return self.inflight


@dataclass(frozen=True)
class PoolLimits:
    max_concurrency: int
    timeout_s: float
    max_queued: int
    queue_timeout_s: float
    retries: RetrySpec = field(default_factory=RetrySpec)  # the deployment's, read on each failed attempt


@dataclass
class FailureState:
    """Consecutive init failures; further cold starts wait for ``retry_at``."""

    reason: str
    detail: str | None
    count: int
    retry_at: float


class _Waiter:
    __slots__ = ("arrived", "avoid", "future", "pool", "token")

    def __init__(self, future: asyncio.Future[PoolReplica], arrived: float,
                 pool: RevisionPool, token: int = 0, avoid: PoolReplica | None = None) -> None:
        self.future = future
        self.arrived = arrived
        self.pool = pool  # the pool holding it now: traffic moves waiters between pools
        self.token = token  # the request, to the outlier detector (``try_acquire``)
        self.avoid = avoid  # the replica a failed attempt of the request went to


class RevisionPool:
    """Slots, queue and load statistics for one revision of one deployment."""

    def __init__(
        self,
        namespace: str,
        deployment: str,
        revision: int,
        limits: PoolLimits,
        activate: Callable[[RevisionPool], None],
    ) -> None:
        self.namespace = namespace
        self.deployment = deployment
        self.revision = revision
        self.limits = limits
        self.activate = activate
        self.replicas: dict[str, PoolReplica] = {}
        self.ready: list[PoolReplica] = []  # ready replicas, kept in sync with their state
        self.waiters: deque[_Waiter] = deque()
        self.failure: FailureState | None = None
        self.created = time.monotonic()  # metering counts its capacity from here, not before
        self.load = LoadRecorder(self.created)
        self.rng = random.Random()
        self.on_drained: Callable[[PoolReplica], None] = lambda replica: None
        self.meta: dict[str, Any] = {}  # what the zygote reported about the code
        self.api = "native"  # or "llm" / "embeddings": which protocol adapters may call it
        self.outcomes = OutcomeLog()  # judged during rollouts
        self.copies_dropped = 0  # as a shadow: copies it had no room for
        # Set while this pool is out of its deployment's route: the primary that took its queue.
        self.moved_to: RevisionPool | None = None
        # Asynchronous invocations of the deployment waiting in the durable queue (set on the
        # primary by the async worker): demand the autoscaler sees beside the requests here.
        self.backlog = 0
        # From the deployment's settings (``ejection_for``, ``admission_for``): the replicas
        # the picker skips for now, and the adaptive limit on the requests admitted.
        self.ejection: Ejection | None = None
        self.admission: Admission | None = None

    # -- request path -----------------------------------------------------------
    def try_acquire(self, token: int = 0, avoid: PoolReplica | None = None) -> PoolReplica | None:
        """Take a slot on a ready replica, or None if every slot is busy.

        ``token`` names the request to the outlier detector (whose half-open probe it may
        become). ``avoid`` is the replica a failed attempt of the same request went to (a
        hung one, after a timeout): it is skipped while another ready replica that is not
        ejected exists, busy or not, so that the retry waits for that one's slot instead."""
        if self.waiters:  # keep order: nobody jumps the queue
            return None
        limit = self.limits.max_concurrency
        ready = self.ready
        ejection = self.ejection
        if len(ready) == 1:  # a lone replica is never ejected, nor avoided: it is all there is
            replica = ready[0]
            if replica.inflight >= limit:
                return None
        else:
            free = [r for r in ready if r.inflight < limit]
            if ejection is not None and ejection.detector.ejected:
                free = ejection.usable(free, ready)
            if avoid is not None:
                free = self._avoiding(free, avoid)
            chosen = power_of_two_choices(free, PoolReplica.load, self.rng)
            if chosen is None:
                return None
            replica = chosen
            if ejection is not None:
                ejection.detector.dispatched(replica, token)
        replica.inflight += 1
        return replica

    def _avoiding(self, free: list[PoolReplica], avoid: PoolReplica) -> list[PoolReplica]:
        """``free`` without ``avoid``, unless no other ready replica may take requests (the
        others ejected, or none): then ``avoid`` is better than no replica at all."""
        if avoid not in free:
            return free
        ready = self.ready
        usable = ready if self.ejection is None or not self.ejection.detector.ejected \
            else self.ejection.usable(list(ready), ready)
        if any(replica is not avoid for replica in usable):
            return [replica for replica in free if replica is not avoid]
        return free

    async def wait_for_slot(self, arrived: float, deadline: float | None = None, token: int = 0,
                            avoid: PoolReplica | None = None) -> PoolReplica:
        """Hold the request until a slot frees up or a replica comes up (the activator), for
        ``queue_timeout_s`` at most, and never past the caller's ``deadline`` (monotonic).
        ``token`` and ``avoid`` are ``try_acquire``'s."""
        if self.moved_to is not None:
            # Chosen just before its pool left the route (a stream starts a turn of the loop
            # after its choice): it queues where the pool's held requests went.
            return await self.moved_to.wait_for_slot(arrived, deadline, token, avoid)
        failure = self.failure
        if failure is not None and not self.ready:
            remaining = failure.retry_at - time.monotonic()
            if remaining > 0:
                raise DeploymentFailed(
                    f"deployment {self.deployment!r} revision {self.revision} cannot start: "
                    f"{failure.reason}",
                    retry_after=math.ceil(remaining),  # whole seconds, never before it ends
                    detail=failure.detail,
                )
        if len(self.waiters) >= self.limits.max_queued:
            raise Shed(
                f"deployment {self.deployment!r} has {len(self.waiters)} requests queued "
                f"(max_queued={self.limits.max_queued})",
                retry_after=1.0,
            )
        future: asyncio.Future[PoolReplica] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(future, arrived, self, token, avoid)
        self.waiters.append(waiter)
        self.activate(self)
        self._serve_waiters()
        wait = self.limits.queue_timeout_s
        caller_first = deadline is not None and deadline - time.monotonic() < wait
        if caller_first:
            assert deadline is not None
            wait = max(deadline - time.monotonic(), 0.0)
        try:
            async with asyncio.timeout(wait):
                return await future
        except TimeoutError:
            waiter.pool.abandon(waiter)
            _unprobe(waiter)
            if caller_first:
                raise RequestTimeout(f"no replica of {self.deployment!r} became free within "
                                     "the request's deadline", by_caller=True) from None
            raise Unavailable(
                f"no replica of {self.deployment!r} became free within "
                f"{self.limits.queue_timeout_s:g}s",
                retry_after=1.0,
            ) from None
        except asyncio.CancelledError:
            waiter.pool.abandon(waiter)
            _unprobe(waiter)
            raise

    def admit(self, priority: Priority) -> Admission | None:
        """A request's ticket (None without adaptive shedding), or ``Shed`` past the limit."""
        admission = self.admission
        return admission.admit(self.deployment, priority) if admission is not None else None

    def settle(self, ticket: Admission | None, replica: PoolReplica | None, status: int | None,
               arrived: float, waited: float, now: float, token: int = 0) -> None:
        """A request served here ended (``status`` None: its caller left): its admission goes
        back, and what it says of the replica and of latency goes to the policies. ``token``
        is the one it acquired its replica with."""
        cold = replica is not None and replica.ready_at is not None and replica.ready_at > arrived
        if ticket is not None:
            # A cold start's wait, a failure or a refusal says nothing of how fast replicas are.
            if replica is not None and not cold and status is not None \
                    and (status < 500 or status == 504):
                ticket.finished(now, now - arrived, now - arrived - waited)
            else:
                ticket.finished(now, None, None)
        if self.ejection is not None and replica is not None:
            self.ejection.finished(self.deployment, replica, replica.replica_id, status, now,
                                   token)

    def release(self, replica: PoolReplica) -> None:
        replica.inflight -= 1
        replica.last_used = time.monotonic()
        if replica.state is ReplicaState.READY:
            if self.waiters:
                self._serve_waiters()
        elif replica.state is ReplicaState.DRAINING and replica.inflight <= 0:
            self.on_drained(replica)

    def abandon(self, waiter: _Waiter) -> None:
        """The caller stopped waiting; a slot granted in that same instant goes back."""
        with contextlib.suppress(ValueError):
            self.waiters.remove(waiter)
        future = waiter.future
        if future.done() and not future.cancelled() and future.exception() is None:
            granted = future.result()
            granted.pool.release(granted)

    def _serve_waiters(self) -> None:
        limit = self.limits.max_concurrency
        ejection = self.ejection
        waiters = self.waiters
        while waiters:
            free = [r for r in self.ready if r.inflight < limit]
            if ejection is not None and ejection.detector.ejected:
                free = ejection.usable(free, self.ready)
            if not free:
                return
            # In order, but a retry that must not go back to the one free replica lets the
            # requests behind it have that one.
            for waiter in waiters:
                if waiter.future.done():
                    break
                usable = free if waiter.avoid is None else self._avoiding(free, waiter.avoid)
                if usable:
                    break
            else:
                return
            if waiter is waiters[0]:
                waiters.popleft()
            else:
                waiters.remove(waiter)
            if waiter.future.done():
                continue
            replica = power_of_two_choices(usable, PoolReplica.load, self.rng)
            assert replica is not None
            if ejection is not None:
                ejection.detector.dispatched(replica, waiter.token)
            replica.inflight += 1
            waiter.future.set_result(replica)

    def fail_waiters(self, error: StratusError) -> None:
        waiters, self.waiters = self.waiters, deque()
        for waiter in waiters:
            if not waiter.future.done():
                waiter.future.set_exception(error)

    def take_waiters(self) -> deque[_Waiter]:
        """Hand the queue to another pool (traffic moved to a new revision)."""
        waiters, self.waiters = self.waiters, deque()
        return waiters

    def adopt_waiters(self, waiters: deque[_Waiter]) -> None:
        for waiter in waiters:
            waiter.pool = self
        self.waiters.extend(waiters)
        if self.waiters:
            self.activate(self)
            self._serve_waiters()

    # -- membership (driven by the controller) ------------------------------------
    def add_starting(self, replica_id: str) -> PoolReplica:
        replica = PoolReplica(replica_id=replica_id, created_at=time.monotonic(), pool=self)
        self.replicas[replica_id] = replica
        return replica

    def mark_ready(self, replica: PoolReplica, channel: ReplicaChannel, init_ms: float) -> None:
        replica.channel = channel
        replica.pid = channel.pid
        replica.init_ms = init_ms
        replica.ready_at = time.monotonic()
        replica.state = ReplicaState.READY
        self.failure = None
        self.ready.append(replica)
        if self.ejection is not None:
            self.ejection.detector.add(replica)
        self._serve_waiters()

    def mark_draining(self, replica: PoolReplica) -> None:
        if replica.state is ReplicaState.READY:
            self.ready.remove(replica)
            if self.ejection is not None:
                self.ejection.detector.forget(replica)
        replica.state = ReplicaState.DRAINING
        if replica.inflight <= 0:
            self.on_drained(replica)

    def remove(self, replica_id: str) -> PoolReplica | None:
        replica = self.replicas.pop(replica_id, None)
        if replica is not None:
            if replica.state is ReplicaState.READY:
                self.ready.remove(replica)
                if self.ejection is not None:
                    self.ejection.detector.forget(replica)
            replica.state = ReplicaState.STOPPED
        return replica

    def count(self, state: ReplicaState) -> int:
        return sum(1 for r in self.replicas.values() if r.state is state)

    def sample(self, now: float, t: float) -> MetricSample:
        """``now`` on the monotonic clock; the sample is stamped ``t`` (the policy clock)."""
        sample = self.load.sample(now, len(self.waiters) + self.backlog, t)
        if self.backlog:
            sample = replace(sample, average_concurrency=sample.average_concurrency + self.backlog,
                             peak_concurrency=sample.peak_concurrency + self.backlog,
                             # the backlog waits now: the lowest levels hold at the sample
                             levels_ago_s=(0.0,) * self.backlog + sample.levels_ago_s)
        return sample

    def instant(self, now: float, t: float) -> MetricSample:
        return self.load.instant(now, len(self.waiters), t)

    @property
    def busy(self) -> bool:
        return self.load.current > 0 or bool(self.waiters)


def _unprobe(waiter: _Waiter) -> None:
    """A waiter gave up (``abandon`` handed back a slot granted in that instant): if that
    grant made it its replica's half-open probe, another request may probe."""
    future = waiter.future
    if future.done() and not future.cancelled() and future.exception() is None:
        granted = future.result()
        ejection = granted.pool.ejection
        if ejection is not None:
            ejection.detector.abandoned(granted, waiter.token)
