"""A graceful drain on SIGTERM, and Ctrl+C twice forcing the exit, on a real server."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from server import TEST_ENV, StratusServer, pid_alive, wait_for

GRACE_S = 2.0
SLOW_S = 5.0  # past the grace period: these are still in flight when the listener closes


@pytest.fixture
def draining(tmp_path: Path) -> Iterator[StratusServer]:
    instance = StratusServer(tmp_path / "data", {**TEST_ENV, "STRATUS_DRAIN_GRACE_S": str(GRACE_S)})
    instance.start()
    yield instance
    instance.stop(signal.SIGKILL)


def _client(server: StratusServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=60,
                        headers={"authorization": f"Bearer {server.key}"})


def _readiness(server: StratusServer) -> tuple[int, Any]:
    response = httpx.get(f"{server.url}/readyz", timeout=5)
    return response.status_code, response.json()


def _unready(server: StratusServer) -> Any:
    status, body = _readiness(server)
    return body if status == 503 else None


def test_sigterm_serves_through_the_grace_period_then_drains(draining: StratusServer) -> None:
    server = draining
    server.deploy("basic", "app.py:Echo", name="drain-slow", min_replicas=1, max_replicas=1,
                  max_concurrency=8, ready=1)
    server.deploy("basic", "app.py:Counter", name="drain-stream", min_replicas=1,
                  max_replicas=1, ready=1)
    replicas = [item["pid"] for name in ("drain-slow", "drain-stream")
                for item in server.status(name)["replicas"]["items"]]
    assert _readiness(server)[0] == 200
    slow: list[httpx.Response | Exception] = []

    def call_slow() -> None:
        try:
            slow.append(_client(server).post("/api/deployments/drain-slow/invoke",
                                             json={"sleep": SLOW_S}))
        except httpx.HTTPError as exc:
            slow.append(exc)

    items: list[dict[str, Any]] = []
    first_item = threading.Event()

    def call_stream() -> None:
        with _client(server).stream("POST", "/api/deployments/drain-stream/invoke",
                                    json={"n": 12, "pause": 0.4},
                                    headers={"accept": "application/x-ndjson"}) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                items.append(json.loads(line))
                first_item.set()

    workers = [threading.Thread(target=call_slow) for _ in range(3)]
    workers.append(threading.Thread(target=call_stream))
    for worker in workers:
        worker.start()
    assert first_item.wait(30), "the stream never started"
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    # Python runs the handler on the loop's thread, which wakes at least every 0.1 s (uvicorn's
    # main loop): /readyz turns at once; 1 s leaves room for a loaded machine.
    body = wait_for(lambda: _unready(server), 1.0, "/readyz to answer 503")
    assert body == {"status": "draining"}
    fresh = httpx.post(f"{server.url}/api/deployments/drain-slow/invoke", json={"new": True},
                       headers={"authorization": f"Bearer {server.key}"}, timeout=30)
    assert time.monotonic() - sent < GRACE_S, "the check came too late to be in the grace period"
    assert fresh.status_code == 200, fresh.text  # a new connection, still served
    # Once the grace period is over, and not before, the listener closes.
    wait_for(lambda: _refused(server), GRACE_S + 5, "the listener to close")
    assert time.monotonic() - sent >= GRACE_S
    for worker in workers:
        worker.join(60)
    assert [r.status_code if isinstance(r, httpx.Response) else r for r in slow] == [200] * 3
    assert [item["index"] for item in items] == list(range(12))
    try:
        exited = server.process.wait(30)
    except subprocess.TimeoutExpired:  # the log names a slow step of the stop ("stopping: ...")
        raise AssertionError(f"no exit 30 s after the drain:\n{server.log_tail(80)}") from None
    assert exited == 0
    drained = time.monotonic() - sent
    assert drained >= SLOW_S - 1, drained  # it waited for the slow requests
    wait_for(lambda: not any(pid_alive(pid) for pid in replicas), 5, "the replicas to exit")
    log = server.log_tail(200)
    assert "SIGTERM: not ready" in log and "grace period over" in log


def test_a_second_sigint_forces_the_exit(draining: StratusServer) -> None:
    server = draining
    server.deploy("basic", "app.py:Counter", name="drain-force", min_replicas=1,
                  max_replicas=1, ready=1)
    replica = server.status("drain-force")["replicas"]["items"][0]["pid"]
    started = threading.Event()
    outcome: list[Exception | None] = []

    def call_endless() -> None:  # 600 items, 0.1 s apart: a minute, unless forced
        try:
            with _client(server).stream("POST", "/api/deployments/drain-force/invoke",
                                        json={"n": 600, "pause": 0.1},
                                        headers={"accept": "application/x-ndjson"}) as response:
                for _line in response.iter_lines():
                    started.set()
            outcome.append(None)
        except httpx.HTTPError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=call_endless)
    worker.start()
    assert started.wait(30), "the stream never started"
    assert server.process is not None
    server.process.send_signal(signal.SIGINT)  # no grace period: stops accepting at once
    wait_for(lambda: _refused(server), 5, "the listener to close")
    assert server.process.poll() is None, "the first SIGINT waits for the stream in flight"
    server.process.send_signal(signal.SIGINT)
    forced = time.monotonic()
    server.process.wait(20)
    assert time.monotonic() - forced < 20, "forced, it must not wait out the stream"
    worker.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], httpx.HTTPError), outcome
    # The zygote whose server went away kills its replicas.
    wait_for(lambda: not pid_alive(replica), 10, "the replica to exit")


def _refused(server: StratusServer) -> bool:
    """No new connection is served: refused, or reset when it reached the listen backlog
    just as the listener closed (a CI run met that)."""
    try:
        httpx.get(f"{server.url}/readyz", timeout=1)
    except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
        return True
    return False
