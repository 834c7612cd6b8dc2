"""A replica process: forked from its revision zygote, runs the user's init once, then serves
requests that arrive as frames on its Unix socket to the server.

Sync handlers run on a thread pool sized to ``max_concurrency`` so the event loop stays free
for heartbeats and cancellation; async handlers run as tasks on the loop. A handler that
returns a generator streams: each item goes out as a CHUNK frame, then an empty RESPONSE.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import AsyncGenerator, Callable
from functools import partial
from typing import Any, cast

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from stratus.errors import HandlerError, OutOfMemory, RequestTimeout, StratusError
from stratus.runtime import codec, wire
from stratus.runtime.ack_gate import AckGate
from stratus.runtime.forked import is_out_of_memory
from stratus.runtime.handler_threads import HandlerThreads
from stratus.runtime.loader import HandlerKind, LoadedHandler
from stratus.runtime.memory import peak_rss, read_memory
from stratus.runtime.messages import (
    CHUNK,
    ERROR,
    HEARTBEAT,
    RESPONSE,
    SPANS,
    TO_REPLICA,
    Cancel,
    Chunk,
    Error,
    Heartbeat,
    ReplicaConfig,
    Request,
    Response,
    Spans,
    Stop,
    parse,
)
from stratus.runtime.request_log import RequestLines, current_request, finish_request
from stratus.runtime.tracebacks import HandlerTracebacks
from stratus.sdk.batching import take_batch_sizes
from stratus.sdk.context import Context, RequestContext, current_progress
from stratus.telemetry import tracing


def _end_of_stream(rid: int) -> bytes:
    return wire.encode(Response(RESPONSE, rid, 0, wire.KIND_JSON, b"null"))


class ReplicaServer(asyncio.Protocol):
    """Serves REQUEST frames from the server until STOP or until the server goes away."""

    def __init__(self, handler: Any, loaded: LoadedHandler, ctx: Context, config: ReplicaConfig):
        self.handler = handler
        self.lambda_style = loaded.kind is HandlerKind.LAMBDA
        self.tracebacks = HandlerTracebacks(loaded.bundle_dir)
        self.is_async = loaded.is_async
        self.ctx = ctx
        self.config = config
        self.loop = asyncio.get_running_loop()
        self.decoder = wire.FrameDecoder()
        self.transport: asyncio.Transport | None = None
        self.inflight: dict[int, asyncio.Task[None] | None] = {}
        self.pool = HandlerThreads(config.max_concurrency)
        self.stopping = False
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.tracer, self.spans = tracing.install_replica()
        self.gate: AckGate | None = None
        self.held_spans: dict[int, Span] = {}  # of requests whose start waits for their ack
        # Frames made within one loop iteration, written together at its end: answers that
        # finish together cost the server one read, and this process one write.
        self.outgoing: list[bytes] | None = None
        # Requests of one read that asked for an ack: their acks leave in one write.
        self.to_ack: list[tuple[int, bytes, Callable[[], None]]] = []

    # -- connection -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.gate = AckGate(self.transport)
        self.loop.call_later(self.config.heartbeat_s, self._heartbeat)

    def resume_writing(self) -> None:
        if self.gate is not None:
            self.gate.flushed()

    def connection_lost(self, exc: Exception | None) -> None:
        # The server is gone: nobody is left to answer to.
        os._exit(0)

    def data_received(self, data: bytes) -> None:
        for frame in self.decoder.feed(data):
            message = parse(frame, TO_REPLICA)
            if isinstance(message, Request):
                self._start(message.rid, message.kind, message.payload, message.meta)
                continue
            self._acknowledge()  # a cancel or stop applies to the requests before it as sent
            if isinstance(message, Cancel):
                task = self.inflight.get(message.rid)
                if task is not None:
                    task.cancel()
                elif self.gate is not None and self.gate.drop(message.rid):
                    # Its handler never started: the answer frees the slot the server holds.
                    self._finish(message.rid, wire.encode(Error(
                        ERROR, message.rid, RequestTimeout.status, RequestTimeout.type,
                        "cancelled before the handler started", None)),
                        self.held_spans.pop(message.rid))
            elif isinstance(message, Stop):
                self._stop(float(message.drain_timeout_s))
        self._acknowledge()

    def _acknowledge(self) -> None:
        """Send the acks of the requests read so far, in one write, and start their handlers
        once the acks are out."""
        if self.to_ack:
            to_ack, self.to_ack = self.to_ack, []
            assert self.gate is not None
            self.gate.acknowledged(to_ack)

    def _send(self, frame: bytes) -> None:
        if self.outgoing is not None:
            self.outgoing.append(frame)
            return
        self.outgoing = [frame]
        self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        outgoing, self.outgoing = self.outgoing, None
        if outgoing and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(outgoing))

    def _heartbeat(self) -> None:
        memory = read_memory()
        reports = self._reports()
        if memory.shmem:
            reports["pss_shmem"] = memory.shmem
        # Spans that ended after their request's answer (a handler's background work) too.
        heartbeat = Heartbeat(HEARTBEAT, len(self.inflight), memory.rss, memory.pss, memory.charged,
                              reports)
        self._send(self._spans_frame() + wire.encode(heartbeat))
        self.loop.call_later(self.config.heartbeat_s, self._heartbeat)

    def _reports(self) -> dict[str, Any]:
        """What rides on a heartbeat besides memory: the handler's own gauges, if it keeps any
        (the LLM engine's running and waiting sequences), and the sizes of the batches that
        ``@stratus.batch`` ran since the last beat."""
        reports: dict[str, Any] = {"peak_rss": peak_rss()}
        batch_sizes = take_batch_sizes()
        if batch_sizes:
            reports["batch_sizes"] = batch_sizes
        stats = getattr(self.handler, "stats", None)
        if callable(stats):
            try:
                reports["stats"] = {str(k): float(v) for k, v in stats().items()}
            except Exception:  # a broken stats() must not stop the heartbeat
                self.ctx.logger.exception("stats() of the handler failed")
        return reports

    # -- requests ---------------------------------------------------------------
    def _start(self, rid: int, kind: int, payload: Any, meta: dict[str, Any]) -> None:
        # From the frame's arrival to the answer's departure, a child of the dispatch span.
        span = tracing.replica_span(self.tracer, meta)
        transport = self.transport
        if meta.get("ack") and self.gate is not None and transport is not None \
                and not transport.is_closing():
            # Out of this process before the handler can start: the server then knows that a
            # loss after this may have run the handler, and one before it did not. The ack
            # goes with those of the same read (``_acknowledge``), the handler after it.
            self.inflight[rid] = None
            self.held_spans[rid] = span
            ack = wire.encode(Chunk(CHUNK, rid, wire.KIND_STARTED, None))
            self.to_ack.append((rid, ack, partial(self._begin, rid, kind, payload, meta, span)))
        else:
            self._begin(rid, kind, payload, meta, span)

    def _begin(self, rid: int, kind: int, payload: Any, meta: dict[str, Any], span: Span) -> None:
        if self.held_spans:
            self.held_spans.pop(rid, None)
        if self.is_async:
            self.inflight[rid] = self.loop.create_task(
                self._serve_async(rid, kind, payload, meta, span))
        else:
            self.inflight[rid] = None
            self.pool.submit(partial(self._serve_sync, rid, kind, payload, meta, span))

    def _handler_span(self, replica_span: Span) -> Any:
        """The current span while the handler runs, so ``ctx.span`` nests under it. Failures
        are marked by ``_error_frame``: a traceback never goes into a span."""
        if not replica_span.is_recording():  # unsampled: ctx.span must see that, and no more
            return trace.use_span(replica_span, record_exception=False,
                                  set_status_on_exception=False)
        return self.tracer.start_as_current_span(
            "stratus.handler", trace.set_span_in_context(replica_span),
            record_exception=False, set_status_on_exception=False)

    def _context(self, meta: dict[str, Any]) -> RequestContext:
        deadline = time.monotonic() + float(meta.get("timeout", self.config.timeout_s))
        return RequestContext(self.ctx, str(meta.get("request_id", "")), deadline)

    def _call_handler(self, kind: int, payload: Any, meta: dict[str, Any]) -> Any:
        request = codec.decode_request(kind, payload)
        if self.lambda_style:
            return self.handler(request, self._context(meta))
        return self.handler(request)

    def _progress_sink(self, rid: int) -> Callable[[float, str | None], None]:
        def report(fraction: float, message: str | None) -> None:
            frame = wire.encode(Chunk(CHUNK, rid, wire.KIND_PROGRESS, [fraction, message]))
            self.loop.call_soon_threadsafe(self._send, frame)
        return report

    def _serve_sync(self, rid: int, kind: int, payload: Any, meta: dict[str, Any],
                    span: Span) -> None:
        # For this request only: the pool's thread serves another one next.
        token = current_progress.set(self._progress_sink(rid) if meta.get("progress") else None)
        lines = RequestLines(str(meta.get("request_id", "")), "traceparent" in meta)
        lines_token = current_request.set(lines)
        try:
            self._serve_sync_in_context(rid, kind, payload, meta, span, lines)
        finally:
            current_request.reset(lines_token)
            current_progress.reset(token)

    def _serve_sync_in_context(self, rid: int, kind: int, payload: Any, meta: dict[str, Any],
                               span: Span, lines: RequestLines) -> None:
        with self._handler_span(span):
            try:
                output = self._call_handler(kind, payload, meta)
                if inspect.isgenerator(output):
                    for item in output:
                        self.loop.call_soon_threadsafe(self._send, self._chunk_frame(rid, kind, item))
                    frame = _end_of_stream(rid)
                else:
                    frame = self._ok_frame(rid, kind, output)
            except BaseException as exc:
                frame = self._error_frame(rid, exc, meta, span)
            finish_request(lines)  # in the log before the answer leaves
        self.loop.call_soon_threadsafe(self._finish, rid, frame, span)

    async def _serve_async(self, rid: int, kind: int, payload: Any, meta: dict[str, Any],
                           span: Span) -> None:
        if meta.get("progress"):  # the task has a context of its own: no reset needed
            current_progress.set(self._progress_sink(rid))
        lines = RequestLines(str(meta.get("request_id", "")), "traceparent" in meta)
        current_request.set(lines)
        with self._handler_span(span):
            try:
                output = self._call_handler(kind, payload, meta)
                if inspect.isasyncgen(output):
                    await self._stream(rid, kind, output)
                    frame = _end_of_stream(rid)
                else:
                    if inspect.isawaitable(output):
                        output = await output
                    frame = self._ok_frame(rid, kind, output)
            except asyncio.CancelledError:
                # Cancelled after its timeout: answering frees the slot the server still holds.
                cancelled = RequestTimeout("the handler was cancelled after its timeout")
                frame = self._error_frame(rid, cancelled, meta, span)
            except BaseException as exc:
                frame = self._error_frame(rid, exc, meta, span)
            finish_request(lines)
        self._finish(rid, frame, span)

    async def _stream(self, rid: int, kind: int, items: AsyncGenerator[Any, Any]) -> None:
        """Each item goes out as a CHUNK as soon as it is made; closing the generator on
        cancellation lets the handler free what the stream held (an LLM sequence)."""
        try:
            async for item in items:
                self._send(self._chunk_frame(rid, kind, item))
        finally:
            await items.aclose()

    def _chunk_frame(self, rid: int, kind: int, item: Any) -> bytes:
        chunk_kind, body = codec.encode_response(kind, False, item)
        return wire.encode(Chunk(CHUNK, rid, chunk_kind, body))

    def _ok_frame(self, rid: int, kind: int, output: Any) -> bytes:
        response_kind, body = codec.encode_response(kind, self.lambda_style, output)
        return wire.encode(Response(RESPONSE, rid, 0, response_kind, body))

    def _error_frame(self, rid: int, exc: BaseException, meta: dict[str, Any],
                     span: Span) -> bytes:
        if isinstance(exc, StratusError):
            error: StratusError = exc
            stack = None
        elif is_out_of_memory(exc):
            # An allocation refused under RLIMIT_AS: the replica lives on, the request fails.
            limit = self.config.memory_mb
            error = OutOfMemory(f"the handler ran out of memory ({type(exc).__name__}): the "
                                f"replica's memory limit is {limit} MB" if limit else
                                f"the handler ran out of memory ({type(exc).__name__})")
            stack = self.tracebacks.format(exc)
            self.ctx.logger.error("handler ran out of memory", exc_info=exc,
                                  extra={"request_id": meta.get("request_id")})
        else:
            stack = self.tracebacks.format(exc)
            error = HandlerError(f"{type(exc).__name__}: {exc}")
            self.ctx.logger.error(
                "handler raised %s", type(exc).__name__,
                exc_info=exc, extra={"request_id": meta.get("request_id")},
            )
        failed = Status(StatusCode.ERROR, f"{error.type}: {error.message}")
        span.set_status(failed)
        trace.get_current_span().set_status(failed)  # the handler span
        return wire.encode(Error(ERROR, rid, error.status, error.type, error.message, stack))

    def _finish(self, rid: int, frame: bytes, span: Span) -> None:
        self.inflight.pop(rid, None)
        span.end()
        # The request's spans go first, so the trace is whole when the client has its answer.
        self._send(self._spans_frame() + frame)
        self._maybe_finish_stop()

    def _spans_frame(self) -> bytes:
        records = self.spans.take()
        if not records:
            return b""
        try:
            return wire.encode(Spans(SPANS, records))
        except (TypeError, ValueError, OverflowError):  # an attribute msgpack cannot carry
            self.ctx.logger.warning("dropped %d spans that could not be encoded", len(records))
            return b""

    # -- shutdown ---------------------------------------------------------------
    def _stop(self, drain_timeout: float) -> None:
        self.stopping = True
        self.loop.call_later(drain_timeout, self._exit)
        self._maybe_finish_stop()

    def _maybe_finish_stop(self) -> None:
        if self.stopping and not self.inflight:
            self._exit()

    def _exit(self) -> None:
        self._flush()  # the last answers are written before the process ends
        if not self.done.done():
            self.done.set_result(None)
