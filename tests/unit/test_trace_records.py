"""Tracing's pure parts: wire records, JSON views, the bounded store, the config section."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.trace import Status, StatusCode

from stratus.runtime import messages, wire
from stratus.telemetry.spans import SpanCollector, from_record, from_wire, to_record, view
from stratus.telemetry.tracing import TraceStore, parse_config, traceparent


def finished_spans() -> list[ReadableSpan]:
    """A parent and a failed child with an event, made by a real SDK tracer."""
    collector = SpanCollector()
    provider = TracerProvider(resource=Resource({"stratus.process": "replica"}),
                              shutdown_on_exit=False)
    provider.add_span_processor(collector)
    tracer = provider.get_tracer("test")
    with (tracer.start_as_current_span("parent", attributes={"n": 1}),
          tracer.start_as_current_span("child", record_exception=False) as child):
        child.add_event("step", {"k": "v"})
        child.set_attribute("tags", ("a", "b"))
        child.set_status(Status(StatusCode.ERROR, "boom"))
    return [span for span in collector._finished]


def test_a_record_survives_the_wire_and_rebuilds_the_same_span() -> None:
    child, parent = finished_spans()
    frame = wire.encode(messages.Spans(messages.SPANS, [to_record(child)]))
    spans = messages.parse(wire.decode(frame[4:]), messages.TO_SERVER)
    assert isinstance(spans, messages.Spans)
    record = from_wire(spans.records[0])
    sent = to_record(child)
    assert record[:7] == sent[:7] and record[8:] == sent[8:]
    assert record[7] == {"tags": ["a", "b"]}  # msgpack has arrays, not tuples
    rebuilt = from_record(record, Resource({"service.name": "s"}))
    assert rebuilt.context is not None and child.context is not None
    assert rebuilt.context.trace_id == child.context.trace_id
    assert rebuilt.context.span_id == child.context.span_id
    assert rebuilt.parent is not None and rebuilt.parent.span_id == parent.context.span_id  # type: ignore[union-attr]
    assert (rebuilt.name, rebuilt.start_time, rebuilt.end_time) == (child.name, child.start_time,
                                                                    child.end_time)
    assert rebuilt.status.status_code is StatusCode.ERROR and rebuilt.status.description == "boom"
    assert [(e.name, dict(e.attributes or {})) for e in rebuilt.events] == [("step", {"k": "v"})]
    assert rebuilt.context.trace_flags.sampled  # so a BatchSpanProcessor exports it


def test_the_view_of_a_span() -> None:
    child, parent = finished_spans()
    shown = view(to_record(child), "replica", 42, "r-1")
    assert shown["name"] == "child" and shown["kind"] == "internal"
    assert shown["parent_span_id"] == trace.format_span_id(parent.context.span_id)  # type: ignore[union-attr]
    assert (shown["process"], shown["pid"], shown["replica_id"]) == ("replica", 42, "r-1")
    assert shown["status"] == "error" and shown["status_message"] == "boom"
    assert shown["attributes"] == {"tags": ["a", "b"]}
    assert shown["events"][0]["name"] == "step" and shown["events"][0]["attributes"] == {"k": "v"}
    assert len(shown["trace_id"]) == 32 and len(shown["span_id"]) == 16
    assert shown["duration_ms"] == pytest.approx((shown["end"] - shown["start"]) * 1000, abs=0.01)
    root = view(to_record(parent), "gateway", 7, None)
    assert root["parent_span_id"] is None and "replica_id" not in root


def test_the_store_keeps_the_newest_traces_within_both_bounds() -> None:
    child, parent = finished_spans()
    entry = ("replica", 1, "r", to_record(child))
    store = TraceStore(max_traces=3, max_spans=5)
    for trace_id in range(1, 5):
        store.add(trace_id, entry)
    assert store.get(1) is None and store.get(4) is not None  # the oldest trace went
    for _ in range(3):
        store.on_end(parent)  # a span of this process, in its own trace
    assert store.get(2) is None and len(store) == 5  # 6 spans in 4 traces: the oldest goes
    assert store.get(parent.context.trace_id)[0]["process"] == "gateway"  # type: ignore[index,union-attr]
    assert store.get(99) is None


def test_the_collector_hands_each_span_over_once() -> None:
    collector = SpanCollector()
    spans = finished_spans()
    for span in spans:
        collector.on_end(span)
    assert [r[3] for r in collector.take()] == ["child", "parent"]
    assert collector.take() == []


def test_traceparent_is_the_w3c_header_of_a_span() -> None:
    provider = TracerProvider(shutdown_on_exit=False)
    span = provider.get_tracer("test").start_span("s")
    context = span.get_span_context()
    assert traceparent(span) == (f"00-{trace.format_trace_id(context.trace_id)}-"
                                 f"{trace.format_span_id(context.span_id)}-{context.trace_flags:02x}")
    assert context.trace_flags.sampled
    assert traceparent(trace.INVALID_SPAN) is None


def test_the_config_section_is_validated() -> None:
    assert parse_config({}).otlp_endpoint is None
    config = parse_config({"otlp_endpoint": "http://collector:4318/v1/traces",
                           "service_name": "svc"})
    assert config.service_name == "svc" and config.max_traces == 1000
    with pytest.raises(ValueError, match="otlp_endpoint"):
        parse_config({"otlp_endpoint": "collector:4317"})
    assert config.sample_ratio == 0.01  # of requests without a traceparent, unless told otherwise
    with pytest.raises(ValueError, match="sample_ratio"):
        parse_config({"sample_ratio": 1.5})
    with pytest.raises(ValueError, match="unknown"):
        parse_config({"unknown": 1})
