"""The dispatcher: routes an Invocation to a replica slot, enforces the timeout, and turns the
replica's answer into an InvocationResult or a StratusError.

Protocol adapters call ``invoke``; nothing here knows about HTTP.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stratus.dispatch.channel import ChunkSink, ReplicaChannel
from stratus.dispatch.pool import PoolReplica, RevisionPool
from stratus.errors import NotFound, ReplicaLost, RequestTimeout, StratusError, error_from_type
from stratus.runtime import wire


@dataclass(frozen=True, slots=True)
class Invocation:
    namespace: str
    deployment: str
    kind: int  # wire.KIND_*
    payload: Any
    request_id: str
    revision: int | None = None  # pin a live revision instead of following the route
    on_chunk: ChunkSink | None = None  # receives a streamed answer's items as they arrive
    # Told (revision, cold start) once a replica is chosen: a stream's headers go out before
    # the result exists.
    on_start: Callable[[int, bool], None] | None = None


@dataclass(frozen=True, slots=True)
class InvocationResult:
    revision: int
    cold_start: bool
    kind: int
    payload: Any
    replica_id: str


class Dispatcher:
    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], RevisionPool] = {}
        self.pools: dict[tuple[str, str, int], RevisionPool] = {}

    def pool_for(self, namespace: str, deployment: str, revision: int | None = None) -> RevisionPool:
        if revision is None:
            pool = self.routes.get((namespace, deployment))
        else:
            pool = self.pools.get((namespace, deployment, revision))
        if pool is None:
            what = f"deployment {deployment!r}"
            if revision is not None and (namespace, deployment) in self.routes:
                what += f" revision {revision}"
            raise NotFound(f"{what} not found")
        return pool

    def register(self, pool: RevisionPool) -> None:
        self.pools[(pool.namespace, pool.deployment, pool.revision)] = pool

    def unregister(self, pool: RevisionPool) -> None:
        key = (pool.namespace, pool.deployment, pool.revision)
        if self.pools.get(key) is pool:
            del self.pools[key]

    def set_route(self, pool: RevisionPool) -> None:
        """Send new traffic to ``pool``; requests held by the previous pool move with it."""
        key = (pool.namespace, pool.deployment)
        previous = self.routes.get(key)
        self.routes[key] = pool
        if previous is not None and previous is not pool:
            pool.adopt_waiters(previous.take_waiters())

    def remove_route(self, namespace: str, deployment: str) -> RevisionPool | None:
        return self.routes.pop((namespace, deployment), None)

    async def invoke(self, invocation: Invocation) -> InvocationResult:
        pool = self.pool_for(invocation.namespace, invocation.deployment, invocation.revision)
        arrived = time.monotonic()
        load = pool.load
        load.enter(arrived)
        serving = pool
        try:
            replica = pool.try_acquire()
            if replica is None:
                replica = await pool.wait_for_slot(arrived)
            # A held request may have moved to a new revision's pool while it waited.
            serving = replica.pool
            if invocation.on_start is not None:
                invocation.on_start(serving.revision, _cold(replica, arrived))
            message = await self._call(serving, replica, invocation)
            if message[0] == wire.ERROR:
                raise error_from_type(message[3], message[4], detail=message[5])
        except StratusError as error:
            error.revision = serving.revision
            raise
        finally:
            load.leave(time.monotonic())
        return InvocationResult(
            revision=serving.revision,
            cold_start=_cold(replica, arrived),
            kind=message[3],
            payload=message[4],
            replica_id=replica.replica_id,
        )

    async def _call(
        self, pool: RevisionPool, replica: PoolReplica, invocation: Invocation
    ) -> list[Any]:
        channel = replica.channel
        assert channel is not None
        timeout = pool.limits.timeout_s
        try:
            rid, future = channel.request(
                invocation.kind,
                invocation.payload,
                {"request_id": invocation.request_id, "timeout": timeout},
                invocation.on_chunk,
            )
        except ReplicaLost:
            pool.release(replica)
            raise
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


def _cold(replica: PoolReplica, arrived: float) -> bool:
    """The request waited for this replica to start: it paid a cold start."""
    return replica.ready_at is not None and replica.ready_at > arrived


def _hand_over_slot(
    pool: RevisionPool,
    replica: PoolReplica,
    channel: ReplicaChannel,
    rid: int,
) -> asyncio.Future[list[Any]]:
    """Stop waiting for ``rid`` but release its slot only when the replica is done with it."""
    late: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()

    def release(done: asyncio.Future[list[Any]]) -> None:
        if not done.cancelled():
            done.exception()  # retrieved, so asyncio does not log it as lost
        pool.release(replica)

    late.add_done_callback(release)
    if rid in channel.pending:
        channel.pending[rid] = late
        channel.cancel(rid)
    else:  # the connection already failed every request
        late.set_result([])
    return late


def _expire(
    pool: RevisionPool,
    replica: PoolReplica,
    channel: ReplicaChannel,
    rid: int,
    future: asyncio.Future[list[Any]],
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
