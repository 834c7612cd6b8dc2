"""The latency-anomaly alert on a real server, with its default settings: a fresh hello-world
under light load raises none (its few-millisecond jitter is many deviations but no news), and
a handler that really slows down raises it."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from server import StratusServer, wait_for

HELLO = Path(__file__).resolve().parents[2] / "examples" / "hello"


def anomalies(server: StratusServer, name: str) -> list[dict[str, Any]]:
    shown = server.http.get("/api/alerts").json()["alerts"]
    return [a for a in shown if a["name"] == "latency_anomaly" and a["deployment"] == name]


def test_a_fresh_hello_world_raises_no_latency_anomaly(server: StratusServer) -> None:
    name = "anomaly-hello"
    digest = server.upload_dir(HELLO)
    response = server.http.post("/api/deployments", json={
        "name": name, "code": {"bundle": digest, "entrypoint": "handler.py:handler"},
        "min_replicas": 0})
    assert response.status_code == 200, response.text

    def client(count: int) -> None:
        for index in range(count):
            assert server.invoke(name, {"name": f"n{index}"}).status_code == 200

    # Its first minute, compressed: a cold start, then two light clients side by side.
    client(1)
    clients = [threading.Thread(target=client, args=(150,)) for _ in range(2)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    time.sleep(2.5)  # two evaluations of the rules (one a second) after the last request
    assert anomalies(server, name) == []


def test_a_real_slowdown_raises_a_latency_anomaly(server: StratusServer) -> None:
    name = "anomaly-slow"
    server.deploy("slowdown", "app.py:SlowsDown", name=name, min_replicas=1, max_replicas=1,
                  config={"after": 60}, ready=1)
    for _ in range(60):
        assert server.invoke(name, {}).status_code == 200
    assert anomalies(server, name) == []
    for _ in range(2):
        assert server.invoke(name, {}).status_code == 200  # 300 ms each, from ~1 ms
    fired = wait_for(lambda: anomalies(server, name), 10, "the latency_anomaly alert")
    alert = fired[0]
    assert alert["state"] == "firing" and alert["kind"] == "latency_anomaly"
    assert "ms request" in alert["message"] and alert["value"] >= 3
