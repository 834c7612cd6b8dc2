"""The pure parts of structured logs: tagging captured lines, JSON records, and reading them."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from stratus.cli.logs import render
from stratus.dispatch.outcomes import Outcome
from stratus.observe.access_line import access_line
from stratus.observe.logread import read_tail, select_lines
from stratus.observe.logs import JsonFormatter, log_config, parse_since
from stratus.runtime.capture import tag_line

TAGS = {"deployment": "d", "revision": 2, "replica": "d-2-ab"}


def test_tag_line_wraps_text_and_merges_json() -> None:
    text = json.loads(tag_line(b"hello world\r", "stdout", TAGS, 5.0))
    assert text == {"ts": 5.0, **TAGS, "stream": "stdout", "message": "hello world"}
    own = json.loads(tag_line(b'{"ts": 1.5, "level": "error", "message": "m", "request_id": "r"}',
                              "stderr", TAGS, 5.0))
    assert own == {"ts": 1.5, **TAGS, "level": "error", "message": "m", "request_id": "r",
                   "stream": "stderr"}
    assert json.loads(tag_line(b"{not json", "stdout", TAGS, 1.0))["message"] == "{not json"
    assert json.loads(tag_line("caf\u00e9 \xff".encode("latin-1"), "stdout", TAGS, 1.0))["message"]
    assert tag_line(b"   ", "stdout", TAGS, 1.0) == b""


def test_select_lines_by_time_keeps_continuations() -> None:
    lines = [b'{"ts": 1}', b"Traceback of one", b'{"ts": 5}', b"  more of five", b'{"ts": 9}']
    assert select_lines(lines, 10, since=5) == lines[2:]
    assert select_lines(lines, 2, since=None) == lines[-2:]
    assert select_lines(lines, 0, since=None) == []
    assert select_lines([b"plain text"], 5, since=1) == []  # no time: not known to be recent


def test_read_tail_returns_the_offset_after_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.log"
    assert read_tail(path, 5) == ("", 0)
    path.write_bytes(b'{"ts": 1, "message": "a"}\n{"ts": 2, "message": "b"}\n{"ts": 3, "mess')
    text, offset = read_tail(path, 5, since=2)
    assert text == '{"ts": 2, "message": "b"}\n'
    assert offset == path.read_bytes().index(b'{"ts": 3')  # the half-written line comes later


def test_parse_since() -> None:
    assert parse_since("10m", now=1000.0) == 400.0
    assert parse_since("2h", now=10_000.0) == 2800.0
    assert parse_since("1.5s", now=10.0) == 8.5
    assert parse_since("1970-01-01T00:01:00Z") == 60.0
    assert parse_since("1970-01-01T00:02:00") == 120.0  # naive means UTC
    for bad in ("", "m", "-5m", "yesterday"):
        with pytest.raises(ValueError, match="since"):
            parse_since(bad)


def test_json_formatter_keeps_extras_and_exceptions() -> None:
    record = logging.LogRecord("stratus.x", logging.WARNING, __file__, 1, "%s items", (3,), None)
    record.request_id, record.trace_id = "req-1", None
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "3 items" and entry["level"] == "warning"
    assert entry["logger"] == "stratus.x" and entry["request_id"] == "req-1"
    assert "trace_id" not in entry and "args" not in entry and "pathname" not in entry
    try:
        raise RuntimeError("bad")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    assert "RuntimeError: bad" in json.loads(JsonFormatter().format(record))["exc"]


def test_access_line_fields() -> None:
    outcome = Outcome(namespace="ns", deployment="d", revision=3, ok=False, latency_s=0.0125,
                      shadow=False, at=1.0, request_id="r-1", status=504, replica_id="d-3-x",
                      error_type="timeout")
    entry = json.loads(access_line(outcome))
    assert entry["message"] == "native ns/d r3 504 12.5 ms"
    assert (entry["request_id"], entry["replica"], entry["duration_ms"], entry["error_type"]) == (
        "r-1", "d-3-x", 12.5, "timeout")
    assert (entry["logger"], entry["level"], entry["ts"]) == ("stratus.access", "info", 1.0)
    assert "trace_id" not in entry, "absent fields are left out, as JsonFormatter does"
    outcome.trace_id, outcome.span_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    traced = json.loads(access_line(outcome))
    assert (traced["trace_id"], traced["span_id"]) == (outcome.trace_id, outcome.span_id)


def test_render_for_people() -> None:
    line = json.dumps({"ts": 0.5, "replica": "d-1-a", "stream": "stderr", "level": "error",
                       "message": "failed", "request_id": "r9", "exc": "Traceback\nValueError\n"})
    assert render(line) == ("1970-01-01T00:00:00.500Z d-1-a stderr ERROR [r9] failed\n"
                            "Traceback\nValueError")
    assert render("not json") == "not json"
    traced = json.dumps({"ts": 0.5, "replica": "d-1-a", "stream": "stdout", "message": "hi",
                         "request_id": "r9", "trace_id": "0af7", "span_id": "b7ad"})
    assert render(traced) == "1970-01-01T00:00:00.500Z d-1-a stdout [r9 trace 0af7 span b7ad] hi"


def test_log_config_validation() -> None:
    assert log_config({}).format == "text" and log_config({"level": "DEBUG"}).level == "debug"
    assert log_config({"payloads": True}).payloads and log_config({}).mask_pii
    for bad in ({"payloads": "maybe"}, {"level": "loud"}, {"format": "xml"}, {"colour": True}):
        with pytest.raises(ValueError, match="logging section"):
            log_config(bad)


def test_access_lines_sharing_cached_fragments_keep_their_own_values() -> None:
    first = Outcome(namespace='n"s', deployment="d\\x", revision=2, ok=True, shadow=False,
                    status=200, replica_id="d-2-\u00e9", latency_s=0.0015, at=10.5,
                    request_id='a"b', queue_wait_s=0.25)
    second = replace(first, latency_s=2.0, at=11.0, request_id="c", queue_wait_s=0.0,
                     trace_id="0af7651916cd43dd8448eb211c80319c", span_id="b7ad6b7169203331")
    one, two = json.loads(access_line(first)), json.loads(access_line(second))
    assert (one["namespace"], one["deployment"], one["replica"]) == ('n"s', "d\\x", "d-2-\u00e9")
    assert one["message"] == 'native n"s/d\\x r2 200 1.5 ms' and two["message"].endswith(" 2000.0 ms")
    assert (one["request_id"], one["ts"], one["duration_ms"], one["queue_wait_ms"]) == (
        'a"b', 10.5, 1.5, 250.0)
    assert (two["request_id"], two["ts"], two["duration_ms"], two["queue_wait_ms"]) == (
        "c", 11.0, 2000.0, 0.0)
    assert "trace_id" not in one and two["span_id"] == "b7ad6b7169203331"


def test_the_fragment_cache_starts_over_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    from stratus.observe import access_line as module

    monkeypatch.setattr(module, "CACHED", 3)
    module._cache.clear()
    for revision in range(1, 8):
        outcome = Outcome(namespace="ns", deployment="d", revision=revision, ok=True,
                          latency_s=0.001, shadow=False, at=1.0)
        assert json.loads(access_line(outcome))["revision"] == revision
        assert len(module._cache) <= 3
