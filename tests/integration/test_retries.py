"""Retries of lost work against real replicas killed with SIGKILL: an idempotent deployment
loses nothing, one that is not fails exactly the requests its killed handlers took, a request
that never reached a handler is resent, an Idempotency-Key makes a delivered request
retryable, and a spent retry budget fails requests instead of piling retries on."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from replica_kills import Fate, marker_dir, read_markers, run_with_kills
from server import APPS, StratusServer, wait_for


def _deploy(server: StratusServer, name: str, markers: Path, replicas: int,
            max_concurrency: int = 8, **retries: Any) -> list[int]:
    server.deploy("retries", "app.py:Marked", name=name, min_replicas=replicas,
                  max_replicas=replicas, max_concurrency=max_concurrency,
                  config={"markers": str(markers)}, **({"retries": retries} if retries else {}))
    view = server.wait_ready(name, replicas)
    return [item["pid"] for item in view["replicas"]["items"]]


def _metric(server: StratusServer, name: str, deployment: str, **labels: str) -> float:
    wanted = {"deployment": deployment, **labels}
    total = 0.0
    for line in server.http.get("/metrics").text.splitlines():
        if not line.startswith(name + "{"):
            continue
        series, _, value = line.rpartition(" ")
        pairs = dict(part.split("=", 1) for part in series[len(name) + 1:-1].split(","))
        if all(pairs.get(key) == f'"{value_}"' for key, value_ in wanted.items()):
            total += float(value)
    return total


def _access_attempts(server: StratusServer, deployment: str) -> list[int]:
    path = server.data_dir / "logs" / "server.jsonl"
    attempts = []
    for line in path.read_text().splitlines():
        if f'"deployment":"{deployment}"' in line and '"logger":"stratus.access"' in line:
            attempts.append(json.loads(line)["attempt"])
    return attempts


def _fire(server: StratusServer, name: str, payloads: list[dict[str, Any]],
          keys: bool = False) -> list[httpx.Response]:
    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60,
                                     headers={"authorization": f"Bearer {server.key}"}) as client:
            return await asyncio.gather(*(
                client.post(f"/api/deployments/{name}/invoke", json=payload,
                            headers={"idempotency-key": f"{name}-{payload['id']}"} if keys else {})
                for payload in payloads))
    return asyncio.run(fire())


def _in_background(server: StratusServer, name: str, payloads: list[dict[str, Any]],
                   keys: bool = False) -> tuple[threading.Thread, list[httpx.Response]]:
    responses: list[httpx.Response] = []
    worker = threading.Thread(target=lambda: responses.extend(_fire(server, name, payloads, keys)))
    worker.start()
    return worker, responses


def test_an_idempotent_deployment_loses_no_request_to_kills(server: StratusServer,
                                                             tmp_path: Path) -> None:
    markers = marker_dir(tmp_path / "markers")
    _deploy(server, "retry-idem", markers, 3, idempotent=True)
    run = run_with_kills(server, "retry-idem", markers, rate=40, duration=6, sleep=0.1)
    assert len(run.killed) == 2, run.summary()
    assert not run.failed, (run.summary(), run.failed[:5])
    assert run.retried, f"each kill lost the requests its replica held: {run.summary()}"
    assert {fate.attempts for fate in run.fates} == {1, 2}, run.summary()
    retried = len(run.retried)
    wait_for(lambda: _metric(server, "stratus_retries_total", "retry-idem") == retried, 10,
             "the retries metric")
    wait_for(lambda: _access_attempts(server, "retry-idem").count(2) == retried, 10,
             "the access log's attempt field")


def test_without_idempotence_only_requests_that_reached_a_killed_handler_fail(
        server: StratusServer, tmp_path: Path) -> None:
    markers = marker_dir(tmp_path / "markers")
    _deploy(server, "retry-plain", markers, 3)  # the default: 2 attempts, not idempotent
    # Half a second per request: about 7 in each replica's handlers at any time, so a kill
    # finds some there. At 0.1 s it was 1.3, and both kills found an idle replica in a CI run.
    run = run_with_kills(server, "retry-plain", markers, rate=40, duration=6, sleep=0.5)
    assert len(run.killed) == 2, run.summary()
    failed = {fate.id for fate in run.failed}
    reached = run.reached_killed()
    assert reached, f"the kills hit requests in their handlers: {run.summary()}"
    # A request a killed handler took, unanswered, fails: it may have had its effect.
    assert reached <= failed, (run.summary(), sorted(reached - failed))
    # And only those: the replica acknowledges a request just before its handler's thread
    # starts, which writes the marker a fraction of a millisecond later; a kill in between
    # fails a request that left no marker. At most one such per kill.
    assert len(failed - reached) <= len(run.killed), (run.summary(), sorted(failed - reached))
    for fate in run.failed:
        assert fate.status == 502 and fate.attempts == 1, fate
        assert fate.error is not None and fate.error["type"] == "replica_failed", fate
        assert "signal 9" in fate.error["message"], fate
    wait_for(lambda: _metric(server, "stratus_retries_denied_total", "retry-plain",
                             reason="delivered") == len(failed), 10, "the denied-retries metric")


def test_a_request_a_stopped_replica_never_read_is_resent_when_it_dies(
        server: StratusServer, tmp_path: Path) -> None:
    markers = marker_dir(tmp_path / "markers")
    stopped, _ = _deploy(server, "retry-unread", markers, 2, max_concurrency=2)
    os.kill(stopped, signal.SIGSTOP)  # its socket still takes requests; it reads none
    try:
        worker, responses = _in_background(server, "retry-unread",
                                           [{"id": i, "sleep": 0.2} for i in range(8)])
        wait_for(lambda: _inflight(server, "retry-unread", stopped) == 2, 10,
                 "the stopped replica to be sent its two requests")
    finally:
        os.kill(stopped, signal.SIGKILL)
    worker.join(60)
    assert [r.status_code for r in responses] == [200] * 8, [r.text for r in responses]
    resent = [r for r in responses if r.headers["x-stratus-attempts"] == "2"]
    assert len(resent) == 2, [r.headers["x-stratus-attempts"] for r in responses]
    assert all(r.json()["pid"] != stopped for r in responses)
    # Each handler took each request once: the stopped replica's never ran, so resending them
    # ran nothing twice, though the deployment is not idempotent.
    started = read_markers(markers)
    assert stopped not in started, started
    runs = [i for pid in started for i in (markers / str(pid)).read_text().split()]
    assert sorted(map(int, runs)) == list(range(8)), started


def _inflight(server: StratusServer, name: str, pid: int) -> int:
    items = server.status(name)["replicas"]["items"]
    return next((int(item["inflight"]) for item in items if item["pid"] == pid), -1)


def test_an_idempotency_key_makes_a_request_that_reached_a_handler_retryable(
        server: StratusServer, tmp_path: Path) -> None:
    markers = marker_dir(tmp_path / "markers")
    first, second = _deploy(server, "retry-keyed", markers, 2, max_concurrency=4)
    worker, responses = _in_background(server, "retry-keyed",
                                       [{"id": i, "sleep": 1.5} for i in range(4)], keys=True)
    took = wait_for(lambda: read_markers(markers).get(first), 10,
                    "a request to reach the first replica's handler")
    time.sleep(0.1)  # the rest of the four are in a handler by now too
    took = read_markers(markers)[first]
    os.kill(first, signal.SIGKILL)
    worker.join(60)
    assert [r.status_code for r in responses] == [200] * 4, [r.text for r in responses]
    for response in responses:
        body = response.json()
        resent = body["id"] in took
        assert response.headers["x-stratus-attempts"] == ("2" if resent else "1"), body
        assert body["pid"] == second
    # The handler ran twice for each of them: the client's key said that was safe.
    assert took <= read_markers(markers)[second]


def test_a_spent_retry_budget_fails_requests_instead_of_retrying_them(
        server: StratusServer, tmp_path: Path) -> None:
    markers = marker_dir(tmp_path / "markers")
    # Retries may be a tenth of the requests, with no floor: 20 requests buy 2 retries.
    victim, _ = _deploy(server, "retry-budget", markers, 2, max_concurrency=10,
                        idempotent=True, budget=0.1, min_per_s=0)
    worker, responses = _in_background(server, "retry-budget",
                                       [{"id": i, "sleep": 2} for i in range(20)])
    wait_for(lambda: sum(map(len, read_markers(markers).values())) == 20, 10,
             "all twenty requests to reach a handler")
    lost = read_markers(markers)[victim]
    assert len(lost) == 10, "each replica took ten: all slots were full"
    os.kill(victim, signal.SIGKILL)
    worker.join(60)
    fates = [Fate(r.json()["id"] if r.status_code == 200 else -1, r.status_code,
                  int(r.headers["x-stratus-attempts"])) for r in responses]
    assert sum(1 for f in fates if f.status == 200 and f.attempts == 2) == 2, fates
    failed = [r for r in responses if r.status_code != 200]
    assert len(failed) == 8, fates
    for response in failed:
        assert response.status_code == 502 and response.headers["x-stratus-attempts"] == "1"
        assert response.json()["error"]["type"] == "replica_failed"
    wait_for(lambda: _metric(server, "stratus_retries_denied_total", "retry-budget",
                             reason="budget") == 8, 10, "the budget's refusals in the metric")


def test_a_stream_that_sent_an_item_is_never_resent(server: StratusServer,
                                                     tmp_path: Path) -> None:
    markers = marker_dir(tmp_path / "markers")
    server.deploy("retries", "app.py:Streamed", name="retry-stream", min_replicas=2,
                  max_replicas=2, config={"markers": str(markers)},
                  retries={"attempts": 3, "idempotent": True})
    server.wait_ready("retry-stream", 2)
    with server.http.stream("POST", "/api/deployments/retry-stream/invoke",
                            json={"id": 7, "sleep": 30},
                            headers={"accept": "application/x-ndjson"}) as response:
        lines = response.iter_lines()
        first = json.loads(next(lines))
        assert first["id"] == 7 and response.headers["x-stratus-attempts"] == "1"
        os.kill(first["pid"], signal.SIGKILL)
        rest = [json.loads(line) for line in lines if line]
    assert [line["error"]["type"] for line in rest] == ["replica_failed"], rest
    # Idempotent, attempts left, budget to spare: still not resent, the client had an item.
    assert read_markers(markers) == {first["pid"]: {7}}
    wait_for(lambda: _metric(server, "stratus_retries_denied_total", "retry-stream",
                             reason="streamed") == 1, 10, "the streamed denial in the metric")


def test_the_manifest_and_the_cli_set_a_deployments_retries(server: StratusServer,
                                                            tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text((APPS / "retries" / "app.py").read_text())
    (tmp_path / "stratus.yaml").write_text(
        "name: retry-cli\nentrypoint: app.py:Marked\nconfig: {markers: /nonexistent}\n"
        "retries: {attempts: 4, on: [connect], budget: 0.5}\n")
    server.cli("deploy", str(tmp_path / "stratus.yaml"), "--idempotent", "--no-wait")
    retries = server.status("retry-cli")["scaling"]["retries"]
    assert retries == {"attempts": 4, "on": ["connect"], "idempotent": True, "budget": 0.5,
                       "min_per_s": 1.0}, "the flag joins the manifest's settings"
    server.cli("deploy", str(tmp_path / "stratus.yaml"), "--retries", "1", "--no-wait")
    assert server.status("retry-cli")["scaling"]["retries"]["attempts"] == 1
    refused = server.deploy_raw("retries", "app.py:Marked", name="retry-bad",
                                retries={"attempts": 0, "on": ["reboot"]})
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["type"] == "invalid_request", refused.text
    assert "attempts" in refused.text and "on" in refused.text


def test_a_callers_timeout_bounds_the_queue_wait_and_every_attempt(
        server: StratusServer, tmp_path: Path) -> None:
    """``X-Stratus-Timeout`` is the whole request's deadline: without it the request below
    would wait up to ``queue_timeout_s`` (60 s) for the busy replica, and a timed-out attempt
    would be retried with a fresh ``timeout_s`` (idempotent, 3 attempts)."""
    markers = marker_dir(tmp_path / "markers")
    _deploy(server, "retry-deadline", markers, 1, max_concurrency=1, idempotent=True,
            attempts=3)
    worker, busy = _in_background(server, "retry-deadline", [{"id": 1, "sleep": 8}])
    wait_for(lambda: read_markers(markers) != {}, 10, "the first request to reach the handler")
    began = time.monotonic()
    queued = server.http.post("/api/deployments/retry-deadline/invoke", json={"id": 2},
                              headers={"x-stratus-timeout": "0.5"})
    assert queued.status_code == 504, queued.text
    assert queued.json()["error"]["type"] == "timeout"
    assert "deadline" in queued.json()["error"]["message"]
    assert time.monotonic() - began < 6, "it gave up at its deadline, not when the slot freed"
    worker.join(30)
    assert [r.status_code for r in busy] == [200]

    began = time.monotonic()
    slow = server.http.post("/api/deployments/retry-deadline/invoke",
                            json={"id": 3, "sleep": 4}, headers={"x-stratus-timeout": "1"})
    assert slow.status_code == 504, slow.text
    assert slow.headers["x-stratus-attempts"] == "1", "no retry once the deadline passed"
    assert time.monotonic() - began < 3.5, "one attempt, cut at the caller's deadline"
    # Timeouts at the callers' deadlines say nothing of the replicas: none is ejected.
    server.deploy("retries", "app.py:Marked", name="retry-deadline-wide", min_replicas=2,
                  max_replicas=2, max_concurrency=4, config={"markers": str(markers)},
                  outliers={"consecutive_failures": 2})
    server.wait_ready("retry-deadline-wide", 2)

    async def impatient() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30, headers={
                "authorization": f"Bearer {server.key}", "x-stratus-timeout": "0.5"}) as client:
            return await asyncio.gather(*(
                client.post("/api/deployments/retry-deadline-wide/invoke",
                            json={"id": 10 + i, "sleep": 3}) for i in range(6)))
    assert [r.status_code for r in asyncio.run(impatient())] == [504] * 6
    assert server.status("retry-deadline-wide")["resilience"]["1"]["ejections"] == 0
    for bad in ("soon", "0", "-1", "nan", "inf", "86401"):
        refused = server.http.post("/api/deployments/retry-deadline/invoke", json={"id": 4},
                                   headers={"x-stratus-timeout": bad})
        assert refused.status_code == 400, (bad, refused.text)
        assert "x-stratus-timeout" in refused.json()["error"]["message"]
