"""One trace across the process boundary: gateway, queue, dispatch, replica, handler and the
handler's own spans, joined to a client's traceparent, read back or exported over OTLP."""

from __future__ import annotations

import gzip
import os
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from server import StratusServer, wait_for

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


def spans_of(server: StratusServer, trace_id: str, names: set[str]) -> dict[str, Any]:
    """The trace, once every span in ``names`` has arrived."""
    def check() -> dict[str, Any] | None:
        response = server.http.get(f"/api/traces/{trace_id}")
        if response.status_code != 200:
            return None
        body: dict[str, Any] = response.json()
        return body if names <= {span["name"] for span in body["spans"]} else None

    return wait_for(check, 10, f"spans {sorted(names)} of trace {trace_id}")


def by_name(trace: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {span["name"]: span for span in trace["spans"]}


def test_a_client_trace_spans_gateway_queue_dispatch_replica_and_handler(
        server: StratusServer) -> None:
    # min_replicas=0: the first request waits for a cold start, so it has a queue span.
    server.deploy("tracing", "app.py:Traced", name="tr-sync", min_replicas=0)
    response = server.invoke("tr-sync", {"text": "a b c"},
                             headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"})
    assert response.status_code == 200, response.text
    assert response.headers["x-trace-id"] == CLIENT_TRACE
    trace = spans_of(server, CLIENT_TRACE, {"stratus.gateway", "stratus.queue",
                                            "stratus.dispatch", "stratus.replica",
                                            "stratus.handler", "tokenize"})
    assert trace["trace_id"] == CLIENT_TRACE
    spans = by_name(trace)
    gateway, queue, dispatch = spans["stratus.gateway"], spans["stratus.queue"], spans["stratus.dispatch"]
    replica, handler, tokenize = spans["stratus.replica"], spans["stratus.handler"], spans["tokenize"]
    assert gateway["parent_span_id"] == CLIENT_SPAN  # Stratus joined the client's trace
    assert queue["parent_span_id"] == dispatch["parent_span_id"] == gateway["span_id"]
    assert replica["parent_span_id"] == dispatch["span_id"]
    assert handler["parent_span_id"] == replica["span_id"]
    assert tokenize["parent_span_id"] == handler["span_id"]
    assert {s["trace_id"] for s in trace["spans"]} == {CLIENT_TRACE}

    # The last three come from the replica's own process.
    pid = response.json()["pid"]
    assert server.process is not None
    for span in (gateway, queue, dispatch):
        assert span["process"] == "gateway" and span["pid"] == server.process.pid
    for span in (replica, handler, tokenize):
        assert span["process"] == "replica" and span["pid"] == pid != server.process.pid
    assert tokenize["attributes"] == {"chars": 5, "words": 3}
    assert dispatch["attributes"]["stratus.deployment"] == "tr-sync"
    assert gateway["attributes"]["http.response.status_code"] == 200
    assert gateway["attributes"]["stratus.request_id"] == response.headers["x-request-id"]
    # Children start no earlier than their parents and end no later.
    assert gateway["start"] <= dispatch["start"] <= replica["start"] <= handler["start"]
    assert tokenize["end"] <= handler["end"] <= replica["end"] <= dispatch["end"] <= gateway["end"]
    assert all(span["duration_ms"] >= 0 and span["status"] == "unset" for span in trace["spans"])


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StratusServer]:
    """A server that traces every request, not the default 1% of those without a traceparent."""
    data = tmp_path_factory.mktemp("traced")
    (data / "stratus.yaml").write_text("tracing:\n  sample_ratio: 1\n")
    instance = StratusServer(data)
    instance.start()
    yield instance
    instance.stop()


def test_a_request_without_traceparent_starts_a_trace_it_names(traced: StratusServer) -> None:
    server = traced
    server.deploy("tracing", "app.py:AsyncTraced", name="tr-async", min_replicas=1, ready=1)
    response = server.invoke("tr-async", {})
    assert response.status_code == 200, response.text
    trace_id = response.headers["x-trace-id"]
    assert len(trace_id) == 32 and trace_id != CLIENT_TRACE
    trace = spans_of(server, trace_id, {"stratus.gateway", "stratus.dispatch", "stratus.replica",
                                        "stratus.handler", "think"})
    spans = by_name(trace)
    assert spans["stratus.gateway"]["parent_span_id"] is None  # a root of its own
    assert "stratus.queue" not in spans  # a free slot: no wait, no queue span
    assert spans["think"]["parent_span_id"] == spans["stratus.handler"]["span_id"]


def test_failures_mark_their_spans_and_lambda_context_has_spans(traced: StratusServer) -> None:
    server = traced
    server.deploy("tracing", "app.py:Traced", name="tr-fail", min_replicas=1, ready=1)
    response = server.invoke("tr-fail", {"fail": True})
    assert response.status_code == 500
    spans = by_name(spans_of(server, response.headers["x-trace-id"],
                             {"stratus.gateway", "stratus.handler", "doomed"}))
    assert spans["doomed"]["status"] == "error"
    assert spans["doomed"]["status_message"] == "ValueError: asked to fail"
    assert spans["doomed"]["events"] == []  # no traceback in a span
    assert spans["stratus.handler"]["status"] == "error"
    assert spans["stratus.handler"]["status_message"] == "handler_error: ValueError: asked to fail"
    assert spans["stratus.gateway"]["status"] == "error"

    server.deploy("tracing", "app.py:lambda_handler", name="tr-lambda", min_replicas=1, ready=1)
    response = server.invoke("tr-lambda", {})
    assert response.status_code == 200, response.text
    spans = by_name(spans_of(server, response.headers["x-trace-id"], {"lambda-work"}))
    assert spans["lambda-work"]["parent_span_id"] == spans["stratus.handler"]["span_id"]


def test_unknown_and_malformed_trace_ids(server: StratusServer) -> None:
    response = server.http.get(f"/api/traces/{'ab' * 16}")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["type"] == "not_found" and error["request_id"]
    response = server.http.get("/api/traces/not-a-trace")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request"


class _Collector(BaseHTTPRequestHandler):
    received: list[ExportTraceServiceRequest]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.received.append(request)
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200 if self.path == "/v1/traces" else 404)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def otlp_receiver() -> Iterator[tuple[str, list[ExportTraceServiceRequest]]]:
    """A real OTLP/HTTP endpoint: decodes each export and keeps it."""
    received: list[ExportTraceServiceRequest] = []
    handler = type("Collector", (_Collector,), {"received": received})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1/traces", received
    httpd.shutdown()
    httpd.server_close()


def test_spans_are_exported_over_otlp_when_configured(
        tmp_path: Path, otlp_receiver: tuple[str, list[ExportTraceServiceRequest]]) -> None:
    endpoint, received = otlp_receiver
    config = tmp_path / "stratus.yaml"
    config.write_text(f"tracing:\n  otlp_endpoint: {endpoint}\n  service_name: stratus-test\n")
    instance = StratusServer(tmp_path / "data", {"STRATUS_CONFIG": str(config),
                                                 "STRATUS_TICK_S": "0.2"})
    instance.start()
    try:
        instance.deploy("tracing", "app.py:Traced", name="tr-otlp", min_replicas=1, ready=1)
        response = instance.invoke("tr-otlp", {"text": "x"},
                                   headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"})
        assert response.status_code == 200, response.text
        pid = response.json()["pid"]
    finally:
        # A graceful stop flushes what the exporter holds (uvicorn ends by re-raising SIGTERM).
        assert instance.stop() in (0, -signal.SIGTERM)

    spans = {}
    for request in received:
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans[span.name] = (span, resource)
    assert {"stratus.gateway", "stratus.dispatch", "stratus.replica", "stratus.handler",
            "tokenize"} <= set(spans)
    gateway, gateway_resource = spans["stratus.gateway"]
    assert gateway.trace_id.hex() == CLIENT_TRACE and gateway.parent_span_id.hex() == CLIENT_SPAN
    assert gateway_resource["service.name"].string_value == "stratus-test"
    handler, replica_resource = spans["stratus.handler"]
    assert handler.trace_id.hex() == CLIENT_TRACE
    assert handler.parent_span_id == spans["stratus.replica"][0].span_id
    assert spans["stratus.replica"][0].parent_span_id == spans["stratus.dispatch"][0].span_id
    assert replica_resource["stratus.process"].string_value == "replica"
    assert replica_resource["process.pid"].int_value == pid != os.getpid()


def test_a_sample_ratio_of_zero_records_only_sampled_client_traces(tmp_path: Path) -> None:
    config = tmp_path / "stratus.yaml"
    config.write_text("tracing:\n  sample_ratio: 0\n")
    instance = StratusServer(tmp_path / "data", {"STRATUS_CONFIG": str(config)})
    instance.start()
    try:
        instance.deploy("tracing", "app.py:Traced", name="tr-unsampled", min_replicas=1, ready=1)
        response = instance.invoke("tr-unsampled", {"text": "a b"})
        assert response.status_code == 200, response.text  # ctx.span still works, recording nothing
        assert response.json()["words"] == 2 and response.json()["recorded"] is False
        assert "x-trace-id" not in response.headers, "not traced: no trace to name"
        # A client's traceparent decides for itself: sampled is recorded, unsampled is not.
        unsampled = instance.invoke("tr-unsampled", {"text": "a"},
                                    headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00"})
        assert unsampled.status_code == 200 and "x-trace-id" not in unsampled.headers
        assert unsampled.json()["recorded"] is False
        sampled = instance.invoke("tr-unsampled", {"text": "a"},
                                  headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"})
        assert sampled.headers["x-trace-id"] == CLIENT_TRACE and sampled.json()["recorded"]
        spans_of(instance, CLIENT_TRACE, {"stratus.gateway", "stratus.replica"})
    finally:
        instance.stop()
