"""The dispatcher: chooses the revision pool for a request, routes the Invocation to a replica
slot there, enforces the timeout, and turns the replica's answer into an InvocationResult or a
StratusError.

Protocol adapters call ``choose``, check the chosen revision, then ``run`` the choice; nothing
here knows about HTTP.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from opentelemetry.trace import Status, StatusCode

from stratus.dispatch.calling import call_replica
from stratus.dispatch.channel import ChunkSink
from stratus.dispatch.outcomes import Outcome, OutcomeListener
from stratus.dispatch.pool import PoolReplica, RevisionPool
from stratus.dispatch.retrying import Attempts, Retries
from stratus.dispatch.route import Route
from stratus.errors import (
    NotFound,
    ReplicaLost,
    RequestTimeout,
    StratusError,
    Unavailable,
    error_from_type,
    unknown_deployment,
)
from stratus.resilience.priority import Priority
from stratus.runtime.messages import Error
from stratus.telemetry import tracing

log = logging.getLogger("stratus.dispatch")


@dataclass(frozen=True, slots=True)
class Invocation:
    """What one request asks of a replica; where it goes is its ``Choice``."""

    kind: int  # wire.KIND_*
    payload: Any
    request_id: str
    on_chunk: ChunkSink | None = None  # receives a streamed answer's items as they arrive
    # Told (revision, cold start) once a replica is chosen: a stream's headers go out before
    # the result exists.
    on_start: Callable[[int, bool], None] | None = None
    protocol: str = "native"  # which adapter made it: native, v2, grpc or openai (for metrics)
    # Told (fraction, message) as the handler reports progress (``ctx.progress``); the replica
    # sends those reports only when this is set, as CHUNKs of kind KIND_PROGRESS.
    on_progress: Callable[[float, str | None], None] | None = None
    # The caller's own deadline (``time.monotonic()``): a gRPC client's, or an HTTP request's
    # ``X-Stratus-Timeout``. The queue wait and every attempt end by then at most, and a
    # later answer times out (504) as ``timeout_s`` does.
    deadline: float | None = None
    priority: Priority = Priority.NORMAL  # which share of an adaptive limit it may use
    # The client sent an Idempotency-Key: a request that reached a handler may be resent.
    idempotent: bool = False


@dataclass(slots=True)
class Choice:
    """Where one request goes: the revision pool chosen for it, and the shadow that gets a copy
    (None without one, or when the request was pinned to the shadow itself). Not frozen: a
    frozen dataclass's ``__init__`` goes through ``object.__setattr__``, and one is made for
    every request."""

    pool: RevisionPool
    shadow: RevisionPool | None


@dataclass(frozen=True, slots=True)
class InvocationResult:
    revision: int
    cold_start: bool
    kind: int
    payload: Any
    replica_id: str
    attempts: int = 1  # how many times it was sent (X-Stratus-Attempts)


SHADOW_MAX_QUEUED = 64  # copies held for a cold or saturated shadow; beyond, copies are dropped


class Dispatcher:
    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Route] = {}
        self.pools: dict[tuple[str, str, int], RevisionPool] = {}
        self.listeners: list[OutcomeListener] = []  # told of every finished invocation
        self._rng = random.Random()
        self._shadows: set[asyncio.Task[None]] = set()
        self.retries = Retries()  # each deployment's retry budget
        self._tokens = itertools.count(1)  # one per request: which one is a half-open probe

    def route_for(self, namespace: str, deployment: str) -> Route:
        route = self.routes.get((namespace, deployment))
        if route is None:
            raise self._unknown(namespace, deployment)
        return route

    def is_live(self, namespace: str, deployment: str, revision: int) -> bool:
        """The revision has a pool here, whether or not the traffic split sends it requests."""
        return (namespace, deployment, revision) in self.pools

    def register(self, pool: RevisionPool) -> None:
        self.pools[(pool.namespace, pool.deployment, pool.revision)] = pool

    def unregister(self, pool: RevisionPool) -> None:
        key = (pool.namespace, pool.deployment, pool.revision)
        if self.pools.get(key) is pool:
            del self.pools[key]

    def set_route(self, route: Route) -> None:
        """Send new traffic along ``route``. Requests held by a pool that left it move to the
        primary, and so do those that chose it before the change and queue after it; copies
        held for a shadow that left are dropped."""
        primary = route.primary
        key = (primary.namespace, primary.deployment)
        previous = self.routes.get(key)
        self.routes[key] = route
        for pool in route.pools.values():
            pool.moved_to = None
        if route.shadow is not None:
            route.shadow.moved_to = None
        if previous is None:
            return
        staying = {id(pool) for pool in route.pools.values()}
        for pool in previous.pools.values():
            if id(pool) not in staying:
                if pool is not route.shadow:
                    pool.moved_to = primary
                primary.adopt_waiters(pool.take_waiters())
        old_shadow = previous.shadow
        if old_shadow is not None and old_shadow is not route.shadow \
                and id(old_shadow) not in staying:
            old_shadow.fail_waiters(Unavailable("the shadow revision was removed"))

    def _unknown(self, namespace: str, deployment: str) -> NotFound:
        return unknown_deployment(deployment, (name for ns, name in self.routes if ns == namespace))

    def remove_route(self, namespace: str, deployment: str) -> Route | None:
        self.retries.forget(namespace, deployment)
        return self.routes.pop((namespace, deployment), None)

    def choose(self, namespace: str, deployment: str, pinned: int | None = None,
               headers: Mapping[str, str] | None = None, body: Any = None) -> Choice:
        """The pool that will serve one request: a pin wins, then a sticky key (read from
        ``headers`` or the top-level fields of the JSON ``body``), then a weighted draw.

        An adapter checks the chosen pool (its ``api``, its ``meta``) and then ``run``s this
        choice, so what it validated is the revision that serves. One exception stays, by
        design: a request that has to queue in the chosen pool moves to the new primary if a
        route change takes that pool out of the split (``set_route`` adopts its waiters and
        sends later ones on), and is served there; the answer's revision says so.
        """
        route = self.routes.get((namespace, deployment))  # not route_for: one call less per request
        if route is None:
            raise self._unknown(namespace, deployment)
        key = None
        if route.sticky_header is not None or route.sticky_field is not None:
            key = route.sticky_key(headers, body)
        pool = route.pick(pinned, key, self._rng.random())
        if pool is None:
            raise _not_routed(deployment, pinned)
        shadow = route.shadow
        return Choice(pool, shadow if shadow is not pool else None)

    async def run(self, choice: Choice, invocation: Invocation) -> InvocationResult:
        """Serve ``invocation`` on the chosen pool, and copy it to the shadow if there is one."""
        if choice.shadow is not None:
            self._mirror(choice.shadow, invocation)
        return await self._run(choice.pool, invocation, False)

    def _mirror(self, shadow: RevisionPool, invocation: Invocation) -> None:
        """Send a copy to the shadow revision and never wait for it: the client's answer owes
        the shadow nothing, not even latency. A warm shadow with no free slot drops the copy:
        copies never queue behind copies, so the shadow takes only the capacity it has."""
        limit = shadow.limits.max_concurrency
        saturated = bool(shadow.ready) and all(r.inflight >= limit for r in shadow.ready)
        if saturated or len(shadow.waiters) >= SHADOW_MAX_QUEUED:
            shadow.copies_dropped += 1
            return
        copy = replace(invocation, request_id=f"{invocation.request_id}-shadow",
                       on_chunk=_discard, on_start=None)
        task = asyncio.create_task(self._run_shadow(shadow, copy))
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)

    async def _run_shadow(self, shadow: RevisionPool, copy: Invocation) -> None:
        try:
            await self._run(shadow, copy, True)
        except StratusError as exc:
            log.debug("shadow copy %s failed: %s", copy.request_id, exc.message)
        except Exception:
            log.exception("shadow copy %s failed", copy.request_id)

    async def _run(self, pool: RevisionPool, invocation: Invocation,
                   shadow: bool) -> InvocationResult:
        arrived = time.monotonic()
        load = pool.load
        load.enter(arrived)
        serving = pool
        replica: PoolReplica | None = None
        status: int | None = 200  # None: the caller left, which says nothing of the revision
        blameless = False  # ended by the caller's deadline, not the revision's timeout
        error_type: str | None = None
        waited = 0.0
        # Retries of lost work, begun once the request has its first replica: a request the
        # pool refused never counts into the retry budget. None: one attempt only (retries
        # off, or a shadow's copy, which nobody waits for).
        tries: Attempts | None = None
        begun = shadow
        sink = invocation.on_chunk
        token = next(self._tokens)
        failed: PoolReplica | None = None  # where the last failed attempt went
        ticket = None  # the pool's admission, under an adaptive concurrency limit
        try:
            ticket = pool.admit(invocation.priority)
            while True:  # one turn per attempt; a retry goes to another replica of the pool
                try:
                    replica = pool.try_acquire(token, failed)
                    if replica is None:
                        queued = time.monotonic()
                        if tracing.recording():
                            replica = await self._queued(pool, arrived, invocation.deadline,
                                                         token, failed)
                        else:
                            replica = await pool.wait_for_slot(arrived, invocation.deadline,
                                                               token, failed)
                        waited += time.monotonic() - queued
                    # A held request may have moved to a new revision's pool while it waited.
                    serving = replica.pool
                    if not begun:
                        begun = True
                        tries = self.retries.begin(serving, invocation.idempotent,
                                                   invocation.deadline, time.monotonic())
                        # Whether a stream may be resent is decided by the settings when it
                        # fails (a PATCH applies at once), so every stream is watched.
                        if tries is not None and sink is not None:
                            sink = tries.watch(sink)
                    if invocation.on_start is not None:
                        try:
                            invocation.on_start(serving.revision, _cold(replica, arrived))
                        except BaseException:
                            serving.release(replica)  # the slot call_replica would have freed
                            raise
                    answer = await call_replica(
                        serving, replica, invocation.kind, invocation.payload,
                        invocation.request_id, deadline=invocation.deadline, sink=sink,
                        progress=invocation.on_progress is not None,
                        ack=tries is not None and tries.wants_ack,
                        attempt=tries.count if tries is not None else 1)
                    break
                except (ReplicaLost, RequestTimeout) as lost:
                    if tries is None or not tries.again(serving, replica, lost, time.monotonic()):
                        raise
                    # The failed attempt still counts against its replica (outlier ejection).
                    serving.settle(None, replica, lost.status, arrived, waited, time.monotonic(),
                                   token)
                    # The retry goes to another replica: a lost one has left the pool, but a
                    # timed-out one is still in it, and may hang.
                    pool, failed, replica = serving, replica or failed, None
            if isinstance(answer, Error):
                raise error_from_type(answer.error_type, answer.message, detail=answer.traceback)
        except StratusError as error:
            error.revision = serving.revision
            error.attempts = tries.count if tries is not None else 1
            status, error_type = error.status, error.type
            blameless = isinstance(error, RequestTimeout) and error.by_caller
            raise
        except asyncio.CancelledError:
            status = None
            raise
        except Exception:
            # Not one of the contract's errors: the gateway answers it as a 500, and so it is
            # recorded (the outcome, the access log, the policies).
            status, error_type = StratusError.status, StratusError.type
            raise
        finally:
            now = time.monotonic()
            load.leave(now)
            # A caller's own deadline says no more of the revision than a caller who left.
            serving.settle(ticket, replica, None if blameless else status, arrived, waited, now,
                           token)
            if status is not None:
                self._record(serving, invocation, replica, status, arrived, now, waited, shadow,
                             error_type, tries, blameless)
        return InvocationResult(
            revision=serving.revision,
            cold_start=_cold(replica, arrived),
            kind=answer.kind,
            payload=answer.payload,
            replica_id=replica.replica_id,
            attempts=tries.count if tries is not None else 1,
        )

    async def _queued(self, pool: RevisionPool, arrived: float, deadline: float | None,
                      token: int, avoid: PoolReplica | None) -> PoolReplica:
        """Wait for a slot under a queue span; a request that found a free slot has none,
        which keeps the common path one span cheaper."""
        span = tracing.dispatch_tracer.start_span("stratus.queue")
        try:
            return await pool.wait_for_slot(arrived, deadline, token, avoid)
        except StratusError as error:
            span.set_status(Status(StatusCode.ERROR, error.type))
            raise
        finally:
            span.end()

    def _record(self, pool: RevisionPool, invocation: Invocation, replica: PoolReplica | None,
                status: int, arrived: float, now: float, waited: float, shadow: bool,
                error_type: str | None = None, tries: Attempts | None = None,
                blameless: bool = False) -> None:
        ok = status < 500
        if not blameless:  # the rollout's analysis judges the revision, not its callers
            pool.outcomes.add(ok, now - arrived, now)
        if self.listeners:
            ids = tracing.current_ids()  # the gateway's span: the request's context is current
            outcome = Outcome(
                namespace=pool.namespace, deployment=pool.deployment, revision=pool.revision,
                ok=ok, latency_s=now - arrived, shadow=shadow, at=time.time(),
                request_id=invocation.request_id, protocol=invocation.protocol, status=status,
                queue_wait_s=waited, cold_start=replica is not None and _cold(replica, arrived),
                replica_id=replica.replica_id if replica is not None else None,
                error_type=error_type,
                attempt=tries.count if tries is not None else 1,
                retry_denied=tries.denied if tries is not None else None,
                trace_id=ids[0] if ids is not None else None,
                span_id=ids[1] if ids is not None else None,
                priority=invocation.priority,
            )
            for listener in self.listeners:
                listener(outcome)


def _not_routed(deployment: str, revision: int | None) -> NotFound:
    return NotFound(f"revision {revision} of deployment {deployment!r} takes no traffic; add it "
                    "to the traffic split (at weight 0 only pinned requests reach it)")


def _discard(kind: int, payload: Any) -> None:
    """A shadow's streamed items go nowhere."""


def _cold(replica: PoolReplica, arrived: float) -> bool:
    """The request waited for this replica to start: it paid a cold start."""
    return replica.ready_at is not None and replica.ready_at > arrived
