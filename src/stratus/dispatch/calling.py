"""One attempt's round trip to a replica: the request frame, the timeout armed on it, the
dispatch span, and the slot released when the replica is done with the request."""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import Any

from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from stratus.dispatch.channel import ChunkSink, ReplicaChannel
from stratus.dispatch.pool import PoolReplica, RevisionPool
from stratus.errors import ReplicaLost, RequestTimeout, StratusError
from stratus.runtime.messages import Answer, Error
from stratus.telemetry import tracing


async def call_replica(pool: RevisionPool, replica: PoolReplica, kind: int, payload: Any,
                       request_id: str, *, deadline: float | None = None,
                       sink: ChunkSink | None = None, progress: bool = False,
                       ack: bool = False, attempt: int = 1) -> Answer:
    """Send the request to ``replica`` (a slot already taken) and await its answer, within
    the revision's timeout and the caller's ``deadline``. ``ack`` asks the replica to say
    when its handler takes the request (see ``ReplicaChannel.request``)."""
    channel = replica.channel
    assert channel is not None
    timeout = pool.limits.timeout_s
    by_caller = deadline is not None and deadline - time.monotonic() < timeout
    if by_caller:
        assert deadline is not None
        timeout = max(deadline - time.monotonic(), 0.0)
    meta: dict[str, Any] = {"request_id": request_id, "timeout": timeout}
    if progress:
        meta["progress"] = True
    span: Span | None = None
    current = tracing.current_span()
    if current.is_recording():
        # The round trip to the replica; its traceparent makes the replica's spans children.
        span = tracing.dispatch_tracer.start_span("stratus.dispatch", None, SpanKind.CLIENT, {
            "stratus.deployment": pool.deployment, "stratus.revision": pool.revision,
            "stratus.replica_id": replica.replica_id, "stratus.attempt": attempt})
        meta["traceparent"] = tracing.traceparent(span)
    else:
        unrecorded = tracing.unrecorded_traceparent(current)
        if unrecorded is not None:
            meta["traceparent"] = unrecorded
    try:
        rid, future = channel.request(kind, payload, meta, sink, ack)
    except BaseException as unsent:  # the replica was gone, or the payload cannot be encoded
        if span is not None:
            end_span(span, unsent)
        pool.release(replica)
        raise
    if span is not None:
        future.add_done_callback(partial(_end_dispatch_span, span))
    loop = asyncio.get_running_loop()
    timer = loop.call_later(timeout, _expire, pool, replica, channel, rid, future, timeout,
                            by_caller)
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


def end_span(span: Span, error: BaseException | None) -> None:
    if isinstance(error, StratusError):
        span.set_status(Status(StatusCode.ERROR, error.type))
    span.end()


def _end_dispatch_span(span: Span, future: asyncio.Future[Answer]) -> None:
    """Every way a request to a replica ends resolves its future: answer, timeout, loss."""
    if future.cancelled():
        span.end()
    elif future.exception() is not None:
        end_span(span, future.exception())
    else:
        answer = future.result()
        if isinstance(answer, Error):
            span.set_status(Status(StatusCode.ERROR, str(answer.error_type)))
        span.end()


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
    by_caller: bool,
) -> None:
    if future.done():
        return
    replica.stuck_since.append(time.monotonic())
    late = _hand_over_slot(pool, replica, channel, rid)
    late.add_done_callback(lambda _: replica.stuck_since.pop(0) if replica.stuck_since else None)
    within = "the request's deadline" if by_caller else f"{timeout:g}s"
    future.set_exception(RequestTimeout(
        f"deployment {pool.deployment!r} did not answer within {within}", by_caller=by_caller))
