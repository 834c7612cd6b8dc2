"""A replica process: forked from its revision zygote, runs the user's init once, then serves
requests that arrive as frames on its Unix socket to the server.

Sync handlers run on a thread pool sized to ``max_concurrency`` so the event loop stays free
for heartbeats and cancellation; async handlers run as tasks on the loop. A handler that
returns a generator streams: each item goes out as a CHUNK frame, then an empty RESPONSE.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import socket
import sys
import time
import traceback
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, NoReturn, cast

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from stratus.errors import HandlerError, OutOfMemory, RequestTimeout, StratusError
from stratus.runtime import codec, wire
from stratus.runtime.capture import capture_output, finish_capture
from stratus.runtime.forked import is_out_of_memory, reseed_and_size, reset_signals
from stratus.runtime.loader import HandlerKind, LoadedHandler, instantiate
from stratus.runtime.memory import peak_rss, read_memory
from stratus.runtime.messages import (
    CHUNK,
    ERROR,
    HEARTBEAT,
    HELLO_REPLICA,
    RESPONSE,
    SPANS,
    TO_REPLICA,
    Cancel,
    Chunk,
    Error,
    Heartbeat,
    HelloReplica,
    ReplicaConfig,
    Request,
    Response,
    Spans,
    Stop,
    parse,
)
from stratus.runtime.request_log import RequestLines, current_request, finish_request
from stratus.runtime.sandbox import ReplicaSandbox, SandboxError, compose_env, enter_replica
from stratus.runtime.tracebacks import HandlerTracebacks
from stratus.sdk.batching import take_batch_sizes
from stratus.sdk.context import Context, RequestContext, current_progress, replica_logger
from stratus.telemetry import tracing

FAILED_HELLO_WAIT_S = 2.0  # for the server to read a failed init's reason


def _prepare_process(config: ReplicaConfig) -> None:
    """Undo what the fork inherited from the zygote and set per-replica resources."""
    reset_signals()
    if config.sandbox:
        # Before any user code: its cgroup, its own directory, environment and limits.
        enter_replica(ReplicaSandbox.from_wire(config.sandbox), config.env, config.secrets)
    else:
        os.environ.update(compose_env({}, {}, config.secrets))
    capture_output(config.log_path, {"namespace": config.namespace, "deployment": config.deployment,
                                     "revision": config.revision, "replica": config.replica_id})
    reseed_and_size(config.threads)


def _end_of_stream(rid: int) -> bytes:
    return wire.encode(Response(RESPONSE, rid, 0, wire.KIND_JSON, b"null"))


class AckGate:
    """Starts the handler of a request the server asked to acknowledge only once the ack
    has left this process.

    The ack (a CHUNK of kind ``KIND_STARTED``) tells the server that a loss after it may have
    run the handler, and a loss before it did not (retries of lost work). Written while the
    socket is backed up, it would wait in the transport's buffer while the handler already
    ran, and a kill -9 would lose it with the buffer: the server would then resend a request
    whose handler ran. What the kernel holds, the server still reads after this process
    dies, so a start waits until the transport's buffer is empty (``resume_writing``, with a
    high-water mark of 0 while a start waits). When the socket is not backed up, the ack
    goes out at once and so does the handler: this costs nothing then."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.held: dict[int, Callable[[], None]] = {}  # by rid, in arrival order
        self.limits = transport.get_write_buffer_limits()  # (low, high), put back after

    def acknowledged(self, rid: int, ack: bytes, start: Callable[[], None]) -> bool:
        """Write ``ack`` and call ``start`` once it is out; whether that was at once."""
        transport = self.transport
        transport.write(ack)
        if not self.held and transport.get_write_buffer_size() == 0:
            start()
            return True
        self.held[rid] = start
        if len(self.held) == 1:
            # Paused now (the buffer is not empty), resumed once all of it is in the kernel.
            self.limits = transport.get_write_buffer_limits()
            transport.set_write_buffer_limits(high=0, low=0)
        return False

    def flushed(self) -> None:
        """The transport's buffer went empty (the protocol's ``resume_writing``)."""
        if not self.held:
            return
        low, high = self.limits
        self.transport.set_write_buffer_limits(high=high, low=low)
        held, self.held = self.held, {}
        for start in held.values():
            start()

    def drop(self, rid: int) -> bool:
        """Forget a held request (cancelled before its handler started)."""
        return self.held.pop(rid, None) is not None


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
        self.pool = ThreadPoolExecutor(config.max_concurrency, thread_name_prefix="handler")
        self.stopping = False
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.tracer, self.spans = tracing.install_replica()
        self.gate: AckGate | None = None
        self.held_spans: dict[int, Span] = {}  # of requests whose start waits for their ack

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
            elif isinstance(message, Cancel):
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

    def _send(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

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
            # loss after this may have run the handler, and one before it did not.
            self.inflight[rid] = None
            ack = wire.encode(Chunk(CHUNK, rid, wire.KIND_STARTED, None))
            if not self.gate.acknowledged(rid, ack, partial(self._begin, rid, kind, payload,
                                                            meta, span)):
                self.held_spans[rid] = span
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
            self.pool.submit(self._serve_sync, rid, kind, payload, meta, span)

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
        if not self.done.done():
            self.done.set_result(None)


async def _serve(sock: socket.socket, handler: Any, loaded: LoadedHandler, ctx: Context,
                 config: ReplicaConfig) -> None:
    loop = asyncio.get_running_loop()
    _, server = await loop.create_unix_connection(
        lambda: ReplicaServer(handler, loaded, ctx, config), sock=sock
    )
    await server.done
    if server.transport is not None:
        server.transport.close()


def run_replica(loaded: LoadedHandler, config: ReplicaConfig) -> NoReturn:
    """The body of a freshly forked replica; never returns into the zygote's code."""
    code = 1
    try:
        try:
            _prepare_process(config)
        except SandboxError as exc:  # no user code may run: say why, and end
            sys.stderr.write(f"replica {config.replica_id}: {exc}\n")
            _say_hello(config, HelloReplica(HELLO_REPLICA, config.replica_id, os.getpid(), False,
                                            f"the replica could not enter its sandbox: {exc}",
                                            None))
            os._exit(1)
        tracebacks = HandlerTracebacks(loaded.bundle_dir)
        logger = replica_logger(config.deployment, config.revision, config.replica_id,
                                tracebacks.format_exc_info)
        ctx = Context(
            deployment=config.deployment, namespace=config.namespace, revision=config.revision,
            replica_id=config.replica_id, config=config.config, env={**config.env, **config.secrets},
            memory_mb=config.memory_mb, timeout_s=config.timeout_s, logger=logger,
            threads=config.threads, models=config.models,
        )
        started = time.perf_counter()
        try:
            handler = instantiate(loaded, ctx)
            hello = HelloReplica(HELLO_REPLICA, config.replica_id, os.getpid(), True,
                                 (time.perf_counter() - started) * 1000, None)
        except BaseException as exc:
            handler = None
            trace = tracebacks.format(exc) + "\n"
            sys.stderr.write(trace)
            hello = HelloReplica(HELLO_REPLICA, config.replica_id, os.getpid(), False,
                                 f"{type(exc).__name__}: {exc}", trace)
        sock = _say_hello(config, hello)
        if handler is not None:
            import uvloop

            sock.setblocking(False)
            uvloop.run(_serve(sock, handler, loaded, ctx, config))
            code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        finish_capture()  # flushes stdout and stderr, then writes out what the pipes hold
        os._exit(code)


def _say_hello(config: ReplicaConfig, hello: HelloReplica) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(config.socket_path)
    sock.sendall(wire.encode(hello))
    if not hello.ok:
        # The server closes the connection once it has read why: only then exit, or the
        # zygote's report of the exit, on another connection, may be read first and the
        # reason lost ("replica died during init").
        sock.settimeout(FAILED_HELLO_WAIT_S)
        with contextlib.suppress(OSError):
            while sock.recv(4096):
                pass
    return sock
