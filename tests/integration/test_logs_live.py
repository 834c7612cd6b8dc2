"""Structured logs on a real server: access lines, tagged replica output, and `stratus logs`."""

from __future__ import annotations

import json
import queue
import re
import subprocess
import threading
import time
from datetime import UTC, datetime
from typing import Any

from server import STRATUS, StratusServer, wait_for


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_access_log_lines_carry_the_invocation(server: StratusServer) -> None:
    server.deploy("basic", "app.py:Faulty", name="logs-access", min_replicas=1, ready=1)
    ok = server.invoke("logs-access", {}, headers={"x-request-id": "access-ok-1"})
    failed = server.invoke("logs-access", {"action": "raise"},
                           headers={"x-request-id": "access-fail-1"})
    assert ok.status_code == 200 and failed.status_code == 500
    server_log = server.data_dir / "logs" / "server.jsonl"

    def access() -> dict[str, dict[str, Any]] | None:
        found = {entry["request_id"]: entry for entry in _json_lines(server_log.read_text())
                 if entry.get("logger") == "stratus.access"
                 and entry.get("request_id", "").startswith("access-")}
        return found if len(found) == 2 else None

    entries = wait_for(access, 10, "two access-log lines")
    good, bad = entries["access-ok-1"], entries["access-fail-1"]
    for entry in (good, bad):
        assert entry["namespace"] == "default" and entry["deployment"] == "logs-access"
        assert entry["revision"] == 1 and entry["replica"].startswith("logs-access-1-")
        assert entry["duration_ms"] > 0 and entry["level"] == "info" and entry["ts"] > 0
    assert good["status"] == 200 and "error_type" not in good
    assert bad["status"] == 500 and bad["error_type"] == "handler_error"
    # A human's terminal gets the server's text lines, not one line per request.
    assert "access-ok-1" not in server.log_path.read_text()


def _api_logs(server: StratusServer, name: str, until: str, **params: Any) -> str:
    """The log text once ``until`` appears in it (replica lines land a moment after the answer)."""
    def read() -> str | None:
        text = server.http.get(f"/api/deployments/{name}/logs", params=params).text
        return text if until in text else None

    return wait_for(read, 10, f"{until!r} in the logs of {name}")


def test_replica_output_is_tagged_and_read_by_stratus_logs(server: StratusServer) -> None:
    server.deploy("chatty", "app.py:Chatty", name="logs-chatty", min_replicas=1, ready=1)
    assert server.invoke("logs-chatty", {"say": "first"}).status_code == 200
    raw = _api_logs(server, "logs-chatty", "logger says first")
    by_message = {entry["message"]: entry for entry in _json_lines(raw)}
    printed = by_message["stdout says first"]
    assert printed["stream"] == "stdout" and printed["deployment"] == "logs-chatty"
    assert printed["revision"] == 1
    assert printed["replica"].startswith("logs-chatty-1-") and printed["namespace"] == "default"
    assert by_message["stderr says first"]["stream"] == "stderr"
    logged = by_message["logger says first"]  # ctx.logger's JSON keeps its fields, gains tags
    assert logged["level"] == "info" and logged["stream"] == "stderr"
    assert "chatty init done" in by_message

    # --since: the lines before the cut are left out.
    time.sleep(0.05)
    cut = datetime.now(UTC).isoformat()
    time.sleep(0.05)
    second = server.invoke("logs-chatty", {"say": "second"})
    assert second.status_code == 200
    _api_logs(server, "logs-chatty", "logger says second")
    recent = server.cli("logs", "logs-chatty", "--since", cut).stdout  # as people read it
    request_id = second.headers["x-request-id"]  # a request's lines name it
    # One request in a hundred is sampled for tracing (tracing.sample_ratio), and then its
    # lines name the trace and span too.
    line = rf"{printed['replica']} stdout \[{request_id}( trace [0-9a-f]{{32}} span [0-9a-f]{{16}})?\]"
    assert re.search(line + " stdout says second", recent), recent
    assert "stdout says first" not in recent
    assert "stdout says first" in _api_logs(server, "logs-chatty", "second", since="10m")
    bad = server.http.get("/api/deployments/logs-chatty/logs", params={"since": "yesterday-ish"})
    assert bad.status_code == 400 and "since" in bad.json()["error"]["message"]
    last = server.cli("logs", "logs-chatty", "--tail", "1", "--json").stdout
    assert json.loads(last)["message"].endswith("says second")  # streams interleave freely


def test_follow_streams_new_lines(server: StratusServer) -> None:
    server.deploy("chatty", "app.py:Chatty", name="logs-follow", min_replicas=1, ready=1)
    follower = subprocess.Popen([STRATUS, "logs", "logs-follow", "--follow"], env=server.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert follower.stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout or ()],
                         daemon=True).start()

        def wait_for_line(text: str) -> None:
            seen: list[str] = []
            while not any(text in line for line in seen):
                seen.append(lines.get(timeout=10))  # queue.Empty fails the test

        wait_for_line("chatty init done")  # the tail came: the follower is attached
        assert server.invoke("logs-follow", {"say": "streamed"}).status_code == 200
        wait_for_line("stdout says streamed")
        assert follower.poll() is None  # still following
    finally:
        follower.terminate()
        follower.wait(10)
