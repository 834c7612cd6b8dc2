"""Which spans of a trace a namespace sees: its own requests' gateway spans and everything
below them, never another tenant's, however the trace ids and parents were chosen."""

from __future__ import annotations

from typing import Any

from stratus.gateway.routes.traces import own_spans


def span(span_id: str, parent: str | None, start: float, namespace: str | None = None,
         process: str = "gateway") -> dict[str, Any]:
    attributes = {"stratus.namespace": namespace} if namespace else {}
    return {"span_id": span_id, "parent_span_id": parent, "start": start, "process": process,
            "attributes": attributes}


def ids(spans: list[dict[str, Any]]) -> list[str]:
    return [s["span_id"] for s in spans]


def test_a_namespace_sees_its_requests_and_all_below_them_in_start_order() -> None:
    trace = [span("b-root", "client", 1.0, "b"), span("b-dispatch", "b-root", 2.0),
             span("b-replica", "b-dispatch", 3.0, process="replica"),
             span("a-root", "client", 1.5, "a"), span("a-dispatch", "a-root", 2.5)]
    assert ids(own_spans(trace, "b")) == ["b-root", "b-dispatch", "b-replica"]
    assert ids(own_spans(trace, "a")) == ["a-root", "a-dispatch"]
    assert own_spans(trace, "c") == []


def test_a_request_hung_under_another_tenants_span_stays_its_own() -> None:
    # A's traceparent names B's dispatch span as its parent: B does not see A's request.
    trace = [span("b-root", "client", 1.0, "b"), span("b-dispatch", "b-root", 2.0),
             span("a-root", "b-dispatch", 3.0, "a"), span("a-dispatch", "a-root", 4.0)]
    assert ids(own_spans(trace, "b")) == ["b-root", "b-dispatch"]
    assert ids(own_spans(trace, "a")) == ["a-root", "a-dispatch"]


def test_a_handler_span_claiming_a_namespace_is_no_request_of_it() -> None:
    trace = [span("b-root", "client", 1.0, "b"),
             span("b-handler", "b-root", 2.0, "a", process="replica")]
    assert own_spans(trace, "a") == []
    assert ids(own_spans(trace, "b")) == ["b-root", "b-handler"]
