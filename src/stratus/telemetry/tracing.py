"""OpenTelemetry tracing: the server's provider, the bounded in-memory trace store, the OTLP
exporter, and the few calls the request path makes in the gateway and in replicas."""

from __future__ import annotations

import logging
import os
import random
import threading
from collections import OrderedDict
from collections.abc import Mapping
from contextvars import Token
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context, attach, detach
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from stratus.telemetry.spans import (
    Record,
    SpanCollector,
    from_record,
    from_wire,
    record_trace_id,
    to_record,
    view,
)

log = logging.getLogger("stratus.tracing")

PROPAGATOR = TraceContextTextMapPropagator()
# No-op proxies until ``install`` swaps in the provider's own tracers.
gateway_tracer: trace.Tracer = trace.get_tracer("stratus.gateway")
dispatch_tracer: trace.Tracer = trace.get_tracer("stratus.dispatch")


class TracingConfig(BaseModel):
    """The ``tracing`` section of the server's config file."""

    model_config = ConfigDict(extra="forbid")

    otlp_endpoint: str | None = None  # e.g. http://collector:4318/v1/traces
    otlp_headers: dict[str, str] = Field(default_factory=dict)
    service_name: str = "stratus"
    # The share of requests without a client's traceparent that are recorded: each costs
    # some 80 us of gateway CPU, which would cut a no-op's throughput threefold if all were.
    # A client's sampled traceparent is always honoured (see docs/observability.md).
    sample_ratio: float = Field(0.01, ge=0.0, le=1.0)
    max_traces: int = Field(1000, ge=1)
    max_spans: int = Field(10_000, ge=1)

    @field_validator("otlp_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL (OTLP over HTTP)")
        return value


def parse_config(section: Mapping[str, Any]) -> TracingConfig:
    try:
        return TracingConfig.model_validate(dict(section))
    except ValidationError as exc:
        raise ValueError(f"invalid tracing section in the config file: {exc}") from None


# A stored span: (process, pid, replica id or None, record).
Entry = tuple[str, int, str | None, Record]


class TraceStore(SpanProcessor):
    """The last ``max_traces`` traces, at most ``max_spans`` spans in all; the oldest trace
    goes first. Spans are kept as plain records and turned into JSON only when read."""

    def __init__(self, max_traces: int = 1000, max_spans: int = 10_000) -> None:
        self.max_traces = max_traces
        self.max_spans = max_spans
        self._traces: OrderedDict[int, list[Entry]] = OrderedDict()  # oldest trace first
        self._count = 0
        self._lock = threading.Lock()  # the loop adds; a request thread may read
        self._pid = os.getpid()

    def on_end(self, span: ReadableSpan) -> None:
        """A span this process finished."""
        record = to_record(span)
        self.add(record_trace_id(record), ("gateway", self._pid, None, record))

    def add(self, trace_id: int, entry: Entry) -> None:
        with self._lock:
            spans = self._traces.get(trace_id)
            if spans is None:
                spans = self._traces[trace_id] = []
            spans.append(entry)
            self._count += 1
            while self._count > self.max_spans or len(self._traces) > self.max_traces:
                self._count -= len(self._traces.popitem(last=False)[1])

    def get(self, trace_id: int) -> list[dict[str, Any]] | None:
        with self._lock:
            entries = list(self._traces.get(trace_id, ()))
        if not entries:
            return None
        views = [view(record, process, pid, replica_id)
                 for process, pid, replica_id, record in entries]
        views.sort(key=lambda shown: shown["start"])
        return views

    def __len__(self) -> int:
        return self._count


class Tracing:
    """The server's tracing: its provider (installed as the global one), the store, and the
    exporter when an OTLP endpoint is configured. Replicas' spans arrive through ``ingest``."""

    def __init__(self, config: TracingConfig) -> None:
        self.config = config
        self.resource = Resource.create({"service.name": config.service_name,
                                         "stratus.process": "gateway", "process.pid": os.getpid()})
        self.store = TraceStore(config.max_traces, config.max_spans)
        # ``start_request_span`` decides before any span exists, so an unsampled request
        # costs one random draw; what reaches the SDK is recorded.
        self.provider = TracerProvider(sampler=ALWAYS_ON, resource=self.resource,
                                       shutdown_on_exit=False)
        self.provider.add_span_processor(self.store)
        self.exporter: BatchSpanProcessor | None = None
        if config.otlp_endpoint:
            # Imported only when used: it pulls in requests and protobuf.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            self.exporter = BatchSpanProcessor(OTLPSpanExporter(
                endpoint=config.otlp_endpoint, headers=config.otlp_headers or None, timeout=5))
            self.provider.add_span_processor(self.exporter)
        self._resources: dict[tuple[str, int], Resource] = {}

    def ingest(self, replica_id: str, pid: int, records: list[list[Any]]) -> None:
        """Spans a replica finished: stored as records, rebuilt only for the exporter."""
        exporter = self.exporter
        resource = self._replica_resource(replica_id, pid) if exporter is not None else None
        for raw in records:
            record = from_wire(raw)
            self.store.add(record_trace_id(record), ("replica", pid, replica_id, record))
            if exporter is not None and resource is not None:
                exporter.on_end(from_record(record, resource))

    def _replica_resource(self, replica_id: str, pid: int) -> Resource:
        key = (replica_id, pid)
        resource = self._resources.get(key)
        if resource is None:
            if len(self._resources) > 4096:  # replicas come and go; forget the old ones
                self._resources.clear()
            resource = self.resource.merge(Resource({"stratus.process": "replica",
                                                     "stratus.replica_id": replica_id,
                                                     "process.pid": pid}))
            self._resources[key] = resource
        return resource

    def shutdown(self) -> None:
        """Flush what the exporter holds; blocks up to its timeout."""
        self.provider.shutdown()


_active: Tracing | None = None


def install(section: Mapping[str, Any]) -> Tracing:
    """Set up the server's tracing from its config section; once per process."""
    global _active, gateway_tracer, dispatch_tracer
    tracing = Tracing(parse_config(section))
    trace.set_tracer_provider(tracing.provider)
    # The provider's tracers directly: a proxy adds a lookup to every span of every request.
    gateway_tracer = tracing.provider.get_tracer("stratus.gateway")
    dispatch_tracer = tracing.provider.get_tracer("stratus.dispatch")
    _active = tracing
    return tracing


def active() -> Tracing | None:
    return _active


def receive(replica_id: str, pid: int, records: list[list[Any]]) -> None:
    """A SPANS frame from a replica; dropped when the server does not trace."""
    if _active is not None and records:
        try:
            _active.ingest(replica_id, pid, records)
        except Exception:  # a malformed record must not take the replica's connection down
            log.exception("dropped the spans of replica %s", replica_id)


# -- the gateway and the dispatcher -----------------------------------------------------
def start_request_span(headers: Mapping[str, str], path: str, request_id: str,
                       namespace: str | None) -> Span | None:
    """The root span of a data-plane request, a child of the client's ``traceparent``. None
    when the request has no traceparent and the sample ratio's draw left it out. A client's
    traceparent that is not sampled gets a span that records nothing (its sampled flag is
    honoured) but has ids of its own, for the log lines of the request."""
    if "traceparent" in headers:
        parent: Context | None = PROPAGATOR.extract(headers)
        client = trace.get_current_span(parent).get_span_context()
        if not client.is_valid:
            return None
        if not client.trace_flags.sampled:
            return NonRecordingSpan(SpanContext(client.trace_id, random.getrandbits(64) or 1,
                                                False, TraceFlags(0), client.trace_state))
    elif _active is None or random.random() >= _active.config.sample_ratio:
        return None
    else:
        parent = None
    attributes = {"url.path": path, "stratus.request_id": request_id}
    if namespace is not None:
        attributes["stratus.namespace"] = namespace
    return gateway_tracer.start_span("stratus.gateway", parent, SpanKind.SERVER, attributes)


def enter(span: Span | None) -> Token[Context] | None:
    """Make ``span`` current, so the dispatcher's spans (and a shadow's) nest under it."""
    return attach(trace.set_span_in_context(span)) if span is not None else None


def leave(token: Token[Context] | None, span: Span | None) -> None:
    if token is not None:
        detach(token)
    if span is not None:
        span.end()


def recording() -> bool:
    """Whether the request being served here is traced: the dispatcher's spans follow."""
    return trace.get_current_span().is_recording()


def current_span() -> Span:
    """The span current here: the invalid span when the request has none."""
    return trace.get_current_span()


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the span current here, recorded or not, for log lines; None
    when the request has none (no traceparent, and not sampled)."""
    span = trace.get_current_span()
    if span is trace.INVALID_SPAN:  # the common case, told apart at once
        return None
    context = span.get_span_context()
    if not context.is_valid:
        return None
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)


def unrecorded_traceparent(span: Span) -> str | None:
    """The traceparent that gives a replica the ids of ``span``, a request's span that is not
    recorded (its client's traceparent was not sampled), so its log lines carry them too."""
    if span is trace.INVALID_SPAN:
        return None
    context = span.get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-00"


def trace_id_of(span: Span) -> bytes:
    """The ``X-Trace-Id`` header: the 32 hex digits ``GET /api/traces/{id}`` takes."""
    return trace.format_trace_id(span.get_span_context().trace_id).encode()


def set_http_status(span: Span, status: int) -> None:
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(StatusCode.ERROR)


def current_trace_id() -> str | None:
    """The trace of the request being served here (for log lines), if any."""
    context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(context.trace_id) if context.is_valid else None


def traceparent(span: Span) -> str | None:
    """The W3C header that makes the replica's spans children of ``span``."""
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier, trace.set_span_in_context(span))
    return carrier.get("traceparent")


# -- replicas ------------------------------------------------------------------------------
def install_replica() -> tuple[trace.Tracer, SpanCollector]:
    """In a freshly forked replica: spans end up in the collector, which the replica empties
    into a SPANS frame before each answer. The server exports them; replicas never do."""
    collector = SpanCollector()
    # The gateway's decision travels in the traceparent's sampled flag; an unsampled
    # request's spans here are no-ops that cost next to nothing. A span with no parent (a
    # ctx.span in a request that is not traced) is never recorded: only the gateway starts
    # traces, or the sample ratio would not bound them.
    provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF),
                              resource=Resource({"stratus.process": "replica"}),
                              shutdown_on_exit=False)
    provider.add_span_processor(collector)
    trace.set_tracer_provider(provider)
    return provider.get_tracer("stratus.replica"), collector


def replica_span(tracer: trace.Tracer, meta: Mapping[str, Any]) -> Span:
    """The replica's span of a request, a child of the dispatch span. A request without a
    traceparent gets the invalid span, which records nothing and costs nothing; one whose
    traceparent is not sampled gets the gateway's unrecorded span, whose ids its log lines
    carry."""
    header = meta.get("traceparent")
    if not header:
        return trace.INVALID_SPAN
    parent = PROPAGATOR.extract({"traceparent": header})
    context = trace.get_current_span(parent).get_span_context()
    if not context.trace_flags.sampled:
        return NonRecordingSpan(context)
    return tracer.start_span("stratus.replica", parent, SpanKind.SERVER)
