"""From a log line to its trace, through the real log files: the access line in ``server.jsonl``
and a handler's ``print`` and ``logging`` lines in the deployment's log carry the request's
``request_id`` always, and its ``trace_id`` and ``span_id`` when it has a traceparent or is
sampled; a sampled request's ids are those of the trace ``GET /api/traces/{id}`` returns."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from server import TEST_ENV, StratusServer, wait_for

TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
SAID = ("printed {w}", "INFO root root logged {w}", "INFO tracelogs module logged {w}",
        "ctx logged {w}", "inside a span {w}", "no newline {w}")


def _server(tmp_path_factory: pytest.TempPathFactory, ratio: float) -> Iterator[StratusServer]:
    data = tmp_path_factory.mktemp(f"trace-logs-{ratio}")
    (data / "stratus.yaml").write_text(f"tracing:\n  sample_ratio: {ratio}\n")
    instance = StratusServer(data, {**TEST_ENV, "COLUMNS": "250"})
    instance.start()
    instance.deploy("tracelogs", "app.py:Talker", name="talker", min_replicas=1, ready=1)
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def unsampled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StratusServer]:
    """Records only what a client's sampled traceparent asks for."""
    yield from _server(tmp_path_factory, 0.0)


@pytest.fixture(scope="module")
def sampled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StratusServer]:
    yield from _server(tmp_path_factory, 1.0)


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _access(server: StratusServer, request_id: str) -> dict[str, Any]:
    path = server.data_dir / "logs" / "server.jsonl"

    def find() -> dict[str, Any] | None:
        for entry in _lines(path.read_text()):
            if entry.get("logger") == "stratus.access" and entry["request_id"] == request_id:
                return entry
        return None

    return wait_for(find, 10, f"the access line of {request_id}")


def _handler_lines(server: StratusServer, name: str, word: str,
                   count: int = len(SAID)) -> dict[str, dict[str, Any]]:
    """The request's lines in the deployment's log file, by message."""
    path = server.data_dir / "logs" / "default" / f"{name}.log"

    def find() -> dict[str, dict[str, Any]] | None:
        found = {entry["message"]: entry for entry in _lines(path.read_text())
                 if entry.get("message", "").endswith(f" {word}")}
        return found if len(found) >= count else None

    return wait_for(find, 10, f"{count} lines saying {word}")


def _invoke(server: StratusServer, name: str, word: str, request_id: str,
            traceparent: str | None = None) -> dict[str, str]:
    headers = {"x-request-id": request_id}
    if traceparent:
        headers["traceparent"] = traceparent
    response = server.invoke(name, {"say": word}, headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.headers)


def _trace(server: StratusServer, trace_id: str, names: set[str]) -> dict[str, dict[str, Any]]:
    def check() -> dict[str, dict[str, Any]] | None:
        response = server.http.get(f"/api/traces/{trace_id}")
        if response.status_code != 200:
            return None
        spans = {span["name"]: span for span in response.json()["spans"]}
        return spans if names <= set(spans) else None

    return wait_for(check, 10, f"spans {sorted(names)} of trace {trace_id}")


def test_a_sampled_traceparent_puts_its_trace_on_every_line(unsampled: StratusServer) -> None:
    server = unsampled
    _invoke(server, "talker", "w1", "req-traced-1", f"00-{TRACE}-{CLIENT_SPAN}-01")
    spans = _trace(server, TRACE, {"stratus.gateway", "stratus.handler", "inner"})
    access = _access(server, "req-traced-1")
    assert access["trace_id"] == TRACE and access["span_id"] == spans["stratus.gateway"]["span_id"]

    lines = _handler_lines(server, "talker", "w1")
    handler_span = spans["stratus.handler"]["span_id"]
    for said in SAID:
        entry = lines[said.format(w="w1")]
        assert entry["request_id"] == "req-traced-1" and entry["trace_id"] == TRACE, entry
        expected = spans["inner"]["span_id"] if said.startswith("inside") else handler_span
        assert entry["span_id"] == expected, entry
        assert entry["deployment"] == "talker" and entry["replica"].startswith("talker-1-")
    assert lines["printed w1"]["stream"] == "stdout"
    assert lines["INFO root root logged w1"]["stream"] == "stderr"
    assert lines["ctx logged w1"]["level"] == "info"  # ctx.logger's own fields stay

    shown = server.cli("logs", "talker", "--tail", "50").stdout
    assert f"[req-traced-1 trace {TRACE} span {handler_span}] printed w1" in shown


def test_an_unsampled_traceparent_still_names_its_trace(unsampled: StratusServer) -> None:
    """Nothing is recorded, but the lines share the client's trace id and the gateway's
    (unrecorded) span id, so they join the client's own logs."""
    server = unsampled
    headers = _invoke(server, "talker", "w2", "req-unsampled-2", f"00-{TRACE}-{CLIENT_SPAN}-00")
    assert "x-trace-id" not in headers
    access = _access(server, "req-unsampled-2")
    assert access["trace_id"] == TRACE and len(access["span_id"]) == 16
    assert access["span_id"] != CLIENT_SPAN
    for said, entry in _handler_lines(server, "talker", "w2").items():
        assert (entry["request_id"], entry["trace_id"]) == ("req-unsampled-2", TRACE), said
        if said.startswith("inside"):  # the handler's own span: unrecorded, but its own id
            assert entry["span_id"] not in (access["span_id"], CLIENT_SPAN)
        else:
            assert entry["span_id"] == access["span_id"], said


def test_an_untraced_request_has_its_request_id_only(unsampled: StratusServer) -> None:
    server = unsampled
    headers = _invoke(server, "talker", "w3", "req-plain-3")
    assert "x-trace-id" not in headers
    access = _access(server, "req-plain-3")
    assert "trace_id" not in access and "span_id" not in access
    for said, entry in _handler_lines(server, "talker", "w3").items():
        assert entry["request_id"] == "req-plain-3", said
        assert "trace_id" not in entry and "span_id" not in entry, said
    ready = [entry for entry in _lines((server.data_dir / "logs" / "default" / "talker.log")
                                       .read_text()) if entry.get("message") == "talker ready"]
    assert ready and "request_id" not in ready[0]  # written by __init__, not by a request


def test_a_sampled_request_logs_the_trace_the_server_stored(sampled: StratusServer) -> None:
    server = sampled
    headers = _invoke(server, "talker", "w4", "req-sampled-4")
    trace_id = headers["x-trace-id"]
    spans = _trace(server, trace_id, {"stratus.gateway", "stratus.handler"})
    assert spans["stratus.gateway"]["parent_span_id"] is None  # a trace of its own
    access = _access(server, "req-sampled-4")
    assert access["trace_id"] == trace_id
    assert access["span_id"] == spans["stratus.gateway"]["span_id"]
    lines = _handler_lines(server, "talker", "w4")
    assert lines["printed w4"]["trace_id"] == trace_id
    assert lines["printed w4"]["span_id"] == spans["stratus.handler"]["span_id"]
    assert lines["INFO root root logged w4"]["span_id"] == spans["stratus.handler"]["span_id"]


def test_an_async_handler_tags_its_lines_too(sampled: StratusServer) -> None:
    server = sampled
    server.deploy("tracelogs", "app.py:AsyncTalker", name="async-talker", min_replicas=1,
                  ready=1)
    for n in range(3):  # one after another on the same loop: each line keeps its own request
        headers = _invoke(server, "async-talker", f"a{n}", f"req-async-{n}")
        spans = _trace(server, headers["x-trace-id"], {"stratus.handler"})
        lines = _handler_lines(server, "async-talker", f"a{n}", 2)
        for message in (f"async printed a{n}", f"INFO root async logged a{n}"):
            assert lines[message]["request_id"] == f"req-async-{n}"
            assert lines[message]["trace_id"] == headers["x-trace-id"]
            assert lines[message]["span_id"] == spans["stratus.handler"]["span_id"]
