"""Alerts on a real server: an error-ratio rule fires to a real webhook (which fails the first
delivery, so the retry is exercised), resolves, and shows in ``GET /api/alerts`` and the log."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from server import TEST_ENV, StratusServer, wait_for


class Webhook:
    """Records every POST; answers the first with a 500."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.attempts = 0
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                hook.attempts += 1
                status = 500 if hook.attempts == 1 else 200
                if status == 200:
                    hook.received.append(json.loads(body))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def states(self) -> list[str]:
        return [payload["alert"]["state"] for payload in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture
def alerting_server(tmp_path: Path, webhook: Webhook) -> Iterator[StratusServer]:
    config = tmp_path / "stratus.yaml"
    config.write_text(yaml.safe_dump({"alerts": {
        "webhook": {"url": webhook.url, "timeout_s": 2, "retries": 3, "backoff_s": 0.1},
        "rules": [{"name": "faulty-errors", "deployment": "alert-faulty", "kind": "error_ratio",
                   "threshold": 0.5, "window_s": 5, "min_requests": 4}],
        "interval_s": 0.2,
    }}))
    instance = StratusServer(tmp_path / "data", {**TEST_ENV, "STRATUS_CONFIG": str(config)})
    instance.start()
    yield instance
    instance.stop()


def test_error_ratio_alert_fires_and_resolves(alerting_server: StratusServer,
                                              webhook: Webhook) -> None:
    server = alerting_server
    server.deploy("basic", "app.py:Faulty", name="alert-faulty", min_replicas=1, ready=1)
    for _ in range(6):
        assert server.invoke("alert-faulty", {"action": "raise"}).status_code == 500
    wait_for(lambda: "firing" in webhook.states(), 10, "the firing alert at the webhook")
    assert webhook.attempts >= 2  # the first delivery got a 500 and was retried
    firing = webhook.received[0]["alert"]
    assert firing["name"] == "faulty-errors" and firing["kind"] == "error_ratio"
    assert firing["deployment"] == "alert-faulty" and firing["namespace"] == "default"
    assert firing["value"] == 1.0 and firing["threshold"] == 0.5 and firing["resolved_at"] is None
    shown = server.http.get("/api/alerts").json()["alerts"]
    assert [(a["name"], a["state"]) for a in shown] == [("faulty-errors", "firing")]

    for _ in range(20):
        assert server.invoke("alert-faulty", {}).status_code == 200
    wait_for(lambda: "resolved" in webhook.states(), 10, "the resolved alert at the webhook")
    assert webhook.states() == ["firing", "resolved"]
    resolved = webhook.received[1]["alert"]
    assert resolved["since"] == firing["since"] and resolved["resolved_at"] >= firing["since"]
    # The rule fires above its threshold, so it resolves at or below it (the window may
    # hold exactly as many successes as errors when it is evaluated).
    assert resolved["value"] <= firing["threshold"]
    shown = server.http.get("/api/alerts").json()["alerts"]
    assert len(shown) == 1 and shown[0]["state"] == "resolved"
    assert server.http.get("/api/alerts", params={"state": "firing"}).json() == {"alerts": []}

    def logged() -> list[dict[str, Any]] | None:
        # The log file is written in batches, every half second.
        records = [json.loads(line) for line in
                   (server.data_dir / "logs" / "server.jsonl").read_text().splitlines()]
        found = [r for r in records if r["logger"] == "stratus.alerts"]
        return found if len(found) >= 2 else None

    alerts = wait_for(logged, 5, "both alert records in the server log")
    assert [r["alert"]["state"] for r in alerts] == ["firing", "resolved"]
    assert alerts[0]["level"] == "warning" and "faulty-errors" in alerts[0]["message"]


def test_invalid_alerts_section_stops_the_server(tmp_path: Path) -> None:
    config = tmp_path / "stratus.yaml"
    config.write_text(yaml.safe_dump({"alerts": {"rules": [{"name": "x", "kind": "p99"}]}}))
    instance = StratusServer(tmp_path / "data", {"STRATUS_CONFIG": str(config)})
    result = instance.cli("serve", "--port", str(instance.port), "--data-dir",
                          str(tmp_path / "data"), check=False)
    assert result.returncode == 1 and "invalid alerts section" in result.stderr
