"""The dispatcher: chooses the revision pool for a request, routes the Invocation to a replica
slot there, enforces the timeout, and turns the replica's answer into an InvocationResult or a
StratusError.

Protocol adapters call ``choose``, check the chosen revision, then ``run`` the choice; nothing
here knows about HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from stratus.dispatch.channel import ChunkSink, ReplicaChannel
from stratus.dispatch.outcomes import Outcome, OutcomeListener
from stratus.dispatch.pool import PoolReplica, RevisionPool
from stratus.dispatch.route import Route
from stratus.errors import (
    NotFound,
    ReplicaLost,
    RequestTimeout,
    StratusError,
    Unavailable,
    error_from_type,
)
from stratus.runtime.messages import Answer, Error
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
    protocol: str = "native"  # which adapter made it: native, v2 or openai (for metrics)
    # Told (fraction, message) as the handler reports progress (``ctx.progress``); the replica
    # sends those reports only when this is set, as CHUNKs of kind KIND_PROGRESS.
    on_progress: Callable[[float, str | None], None] | None = None


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


SHADOW_MAX_QUEUED = 64  # copies held for a cold or saturated shadow; beyond, copies are dropped


class Dispatcher:
    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Route] = {}
        self.pools: dict[tuple[str, str, int], RevisionPool] = {}
        self.listeners: list[OutcomeListener] = []  # told of every finished invocation
        self._rng = random.Random()
        self._shadows: set[asyncio.Task[None]] = set()

    def route_for(self, namespace: str, deployment: str) -> Route:
        route = self.routes.get((namespace, deployment))
        if route is None:
            raise _unknown(deployment)
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

    def remove_route(self, namespace: str, deployment: str) -> Route | None:
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
            raise _unknown(deployment)
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
        error_type: str | None = None
        waited = 0.0
        try:
            replica = pool.try_acquire()
            if replica is None:
                if tracing.recording():
                    replica = await self._queued(pool, arrived)
                else:
                    replica = await pool.wait_for_slot(arrived)
                waited = time.monotonic() - arrived
            # A held request may have moved to a new revision's pool while it waited.
            serving = replica.pool
            if invocation.on_start is not None:
                invocation.on_start(serving.revision, _cold(replica, arrived))
            answer = await self._call(serving, replica, invocation)
            if isinstance(answer, Error):
                raise error_from_type(answer.error_type, answer.message, detail=answer.traceback)
        except StratusError as error:
            error.revision = serving.revision
            status, error_type = error.status, error.type
            raise
        except asyncio.CancelledError:
            status = None
            raise
        finally:
            now = time.monotonic()
            load.leave(now)
            if status is not None:
                self._record(serving, invocation, replica, status, arrived, now, waited, shadow,
                             error_type)
        return InvocationResult(
            revision=serving.revision,
            cold_start=_cold(replica, arrived),
            kind=answer.kind,
            payload=answer.payload,
            replica_id=replica.replica_id,
        )

    async def _queued(self, pool: RevisionPool, arrived: float) -> PoolReplica:
        """Wait for a slot under a queue span; a request that found a free slot has none,
        which keeps the common path one span cheaper."""
        span = tracing.dispatch_tracer.start_span("stratus.queue")
        try:
            return await pool.wait_for_slot(arrived)
        except StratusError as error:
            span.set_status(Status(StatusCode.ERROR, error.type))
            raise
        finally:
            span.end()

    def _record(self, pool: RevisionPool, invocation: Invocation, replica: PoolReplica | None,
                status: int, arrived: float, now: float, waited: float, shadow: bool,
                error_type: str | None = None) -> None:
        ok = status < 500
        pool.outcomes.add(ok, now - arrived, now)
        if self.listeners:
            outcome = Outcome(
                namespace=pool.namespace, deployment=pool.deployment, revision=pool.revision,
                ok=ok, latency_s=now - arrived, shadow=shadow, at=time.time(),
                request_id=invocation.request_id, protocol=invocation.protocol, status=status,
                queue_wait_s=waited, cold_start=replica is not None and _cold(replica, arrived),
                replica_id=replica.replica_id if replica is not None else None,
                error_type=error_type,
            )
            for listener in self.listeners:
                listener(outcome)

    async def _call(
        self, pool: RevisionPool, replica: PoolReplica, invocation: Invocation
    ) -> Answer:
        channel = replica.channel
        assert channel is not None
        timeout = pool.limits.timeout_s
        meta: dict[str, Any] = {"request_id": invocation.request_id, "timeout": timeout}
        if invocation.on_progress is not None:
            meta["progress"] = True
        span: Span | None = None
        if tracing.recording():
            # The round trip to the replica; its traceparent makes the replica's spans children.
            span = tracing.dispatch_tracer.start_span("stratus.dispatch", None, SpanKind.CLIENT, {
                "stratus.deployment": pool.deployment, "stratus.revision": pool.revision,
                "stratus.replica_id": replica.replica_id})
            meta["traceparent"] = tracing.traceparent(span)
        try:
            rid, future = channel.request(invocation.kind, invocation.payload, meta,
                                          invocation.on_chunk)
        except ReplicaLost as lost:
            if span is not None:
                _end_span(span, lost)
            pool.release(replica)
            raise
        if span is not None:
            future.add_done_callback(partial(_end_dispatch_span, span))
        loop = asyncio.get_running_loop()
        timer = loop.call_later(timeout, _expire, pool, replica, channel, rid, future, timeout)
        try:
            message = await future
        except RequestTimeout:
            raise  # the slot stays taken until the replica answers or dies
        except ReplicaLost:
            timer.cancel()
            pool.release(replica)
            raise
        except asyncio.CancelledError:
            # The caller went away; the replica still works on it, so keep the slot until then.
            timer.cancel()
            _hand_over_slot(pool, replica, channel, rid)
            raise
        timer.cancel()
        pool.release(replica)
        return message


def _unknown(deployment: str) -> NotFound:
    return NotFound(f"deployment {deployment!r} not found")


def _not_routed(deployment: str, revision: int | None) -> NotFound:
    return NotFound(f"revision {revision} of deployment {deployment!r} takes no traffic; add it "
                    "to the traffic split (at weight 0 only pinned requests reach it)")


def _discard(kind: int, payload: Any) -> None:
    """A shadow's streamed items go nowhere."""


def _end_span(span: Span, error: BaseException | None) -> None:
    if isinstance(error, StratusError):
        span.set_status(Status(StatusCode.ERROR, error.type))
    span.end()


def _end_dispatch_span(span: Span, future: asyncio.Future[Answer]) -> None:
    """Every way a request to a replica ends resolves its future: answer, timeout, loss."""
    if future.cancelled():
        span.end()
    elif future.exception() is not None:
        _end_span(span, future.exception())
    else:
        answer = future.result()
        if isinstance(answer, Error):
            span.set_status(Status(StatusCode.ERROR, str(answer.error_type)))
        span.end()


def _cold(replica: PoolReplica, arrived: float) -> bool:
    """The request waited for this replica to start: it paid a cold start."""
    return replica.ready_at is not None and replica.ready_at > arrived


def _hand_over_slot(
    pool: RevisionPool,
    replica: PoolReplica,
    channel: ReplicaChannel,
    rid: int,
) -> asyncio.Future[Answer]:
    """Stop waiting for ``rid`` but release its slot only when the replica is done with it."""
    late: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()

    def release(done: asyncio.Future[Answer]) -> None:
        if not done.cancelled():
            done.exception()  # retrieved, so asyncio does not log it as lost
        pool.release(replica)

    late.add_done_callback(release)
    if rid in channel.pending:
        channel.pending[rid] = late
        channel.cancel(rid)
    else:  # the connection already failed every request
        late.cancel()
    return late


def _expire(
    pool: RevisionPool,
    replica: PoolReplica,
    channel: ReplicaChannel,
    rid: int,
    future: asyncio.Future[Answer],
    timeout: float,
) -> None:
    if future.done():
        return
    replica.stuck_since.append(time.monotonic())
    late = _hand_over_slot(pool, replica, channel, rid)
    late.add_done_callback(lambda _: replica.stuck_since.pop(0) if replica.stuck_since else None)
    future.set_exception(
        RequestTimeout(f"deployment {pool.deployment!r} did not answer within {timeout:g}s")
    )
