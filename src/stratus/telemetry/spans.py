"""Finished spans as plain data: the wire record a replica sends, the ReadableSpan the server
re-exports, and the JSON view ``GET /api/traces/{id}`` returns."""

from __future__ import annotations

import threading
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    format_span_id,
    format_trace_id,
)

# A finished span as plain values: (trace_id (16 bytes), span_id, parent_span_id or None, name,
# kind, start_ns, end_ns, attributes, status code, status description, ((event, ts_ns, attrs),)).
# It crosses the wire as a msgpack array; stored as a tuple of atoms, it is nothing the
# garbage collector walks (10,000 ReadableSpans made a full collection take 60 ms).
Record = tuple[Any, ...]

REPLICA_SCOPE = InstrumentationScope("stratus.replica")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_STATUS = {StatusCode.UNSET: "unset", StatusCode.OK: "ok", StatusCode.ERROR: "error"}


def to_record(span: ReadableSpan) -> Record:
    context = span.context
    assert context is not None
    parent = span.parent
    status = span.status
    # Called for every span on the request path: the common empty cases skip the copies.
    events = span.events
    attributes = span.attributes
    return (context.trace_id.to_bytes(16, "big"), context.span_id,
            parent.span_id if parent is not None else None, span.name, span.kind.value,
            span.start_time, span.end_time, dict(attributes) if attributes else {},
            status.status_code.value, status.description,
            tuple((e.name, e.timestamp, dict(e.attributes or {})) for e in events) if events else ())


def from_wire(record: list[Any]) -> Record:
    """A record as msgpack decodes it (lists) made into atoms only."""
    events = tuple((name, timestamp, attributes) for name, timestamp, attributes in record[10])
    return (*record[:10], events)


def record_trace_id(record: Record) -> int:
    return int.from_bytes(record[0], "big")


def from_record(record: Record, resource: Resource) -> ReadableSpan:
    """The span a replica finished, rebuilt on the server so its exporter can send it."""
    trace_id = record_trace_id(record)
    parent = (SpanContext(trace_id, record[2], is_remote=True, trace_flags=_SAMPLED)
              if record[2] is not None else None)
    return ReadableSpan(
        name=record[3],
        context=SpanContext(trace_id, record[1], is_remote=False, trace_flags=_SAMPLED),
        parent=parent, resource=resource, attributes=record[7],
        events=[Event(name, attributes, timestamp) for name, timestamp, attributes in record[10]],
        kind=SpanKind(record[4]), status=Status(StatusCode(record[8]), record[9]),
        start_time=record[5], end_time=record[6], instrumentation_scope=REPLICA_SCOPE,
    )


def view(record: Record, process: str, pid: int, replica_id: str | None) -> dict[str, Any]:
    """A span as ``GET /api/traces/{id}`` shows it; times are Unix seconds."""
    start, end = record[5], record[6]
    parent = record[2]
    shown = {
        "trace_id": format_trace_id(record_trace_id(record)),
        "span_id": format_span_id(record[1]),
        "parent_span_id": format_span_id(parent) if parent is not None else None,
        "name": record[3],
        "kind": SpanKind(record[4]).name.lower(),
        "start": start / 1e9,
        "end": end / 1e9,
        "duration_ms": round((end - start) / 1e6, 3),
        "attributes": {key: list(v) if isinstance(v, tuple) else v
                       for key, v in record[7].items()},
        "status": _STATUS[StatusCode(record[8])],
        "status_message": record[9],
        "events": [{"name": n, "time": t / 1e9, "attributes": a} for n, t, a in record[10]],
        "process": process,
        "pid": pid,
    }
    if replica_id is not None:
        shown["replica_id"] = replica_id
    return shown


class SpanCollector(SpanProcessor):
    """Replica side: holds finished spans until the next answer (or heartbeat) carries them
    to the server. Spans end on handler threads too, hence the lock."""

    def __init__(self) -> None:
        self._finished: list[ReadableSpan] = []
        self._lock = threading.Lock()

    def on_end(self, span: ReadableSpan) -> None:
        with self._lock:
            self._finished.append(span)

    def take(self) -> list[Record]:
        if not self._finished:  # read without the lock: a span missed now goes next time
            return []
        with self._lock:
            finished, self._finished = self._finished, []
        return [to_record(span) for span in finished]
