"""Replica lifecycles under real load: scale to zero and back, kill -9, rollouts, restarts."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections import Counter
from typing import Any

import httpx

from server import StratusServer, pid_alive, wait_for


async def _fire(server: StratusServer, name: str, payloads: list[Any],
                concurrency: int = 200) -> list[httpx.Response | Exception]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60,
                                 headers={"authorization": f"Bearer {server.key}"}) as client:
        calls = [client.post(f"/api/deployments/{name}/invoke", json=p) for p in payloads]
        return await asyncio.gather(*calls, return_exceptions=True)


def test_scale_to_zero_then_a_cold_start_serves_every_held_request(server: StratusServer) -> None:
    server.deploy("basic", "app.py:Echo", name="life-zero", min_replicas=0,
                  scale_to_zero_after_s=1, max_replicas=2)
    first = server.invoke("life-zero", {"warm": 1})
    assert first.status_code == 200 and first.headers["x-stratus-cold-start"] == "true"
    old_pid = first.json()["pid"]
    server.wait_replicas("life-zero", 0, timeout=30)
    assert not pid_alive(old_pid), "a scaled-down replica must exit"
    view = server.status("life-zero")
    assert view["autoscaler"]["desired"] == 0 and "scale to zero" in view["autoscaler"]["reason"]

    responses = asyncio.run(_fire(server, "life-zero", [{"i": i} for i in range(30)]))
    assert all(isinstance(r, httpx.Response) and r.status_code == 200 for r in responses), responses
    cold = [r for r in responses if isinstance(r, httpx.Response)
            and r.headers["x-stratus-cold-start"] == "true"]
    assert cold, "the requests held during the cold start are marked as cold"
    assert sorted(r.json()["echo"]["i"] for r in responses if isinstance(r, httpx.Response)) == \
        list(range(30))


def test_kill_9_under_load_every_request_is_answered(server: StratusServer) -> None:
    server.deploy("basic", "app.py:Echo", name="life-kill", min_replicas=2, max_replicas=2,
                  max_concurrency=8)
    view = server.wait_ready("life-kill", 2)
    victim = view["replicas"]["items"][0]["pid"]
    results: list[httpx.Response | Exception] = []

    def load() -> None:
        results.extend(asyncio.run(_fire(server, "life-kill",
                                         [{"i": i, "sleep": 0.02} for i in range(400)], 32)))

    worker = threading.Thread(target=load)
    worker.start()
    time.sleep(0.3)
    os.kill(victim, signal.SIGKILL)
    worker.join(120)
    assert not worker.is_alive(), "some requests hung"
    assert all(isinstance(r, httpx.Response) for r in results), [r for r in results
                                                                 if isinstance(r, Exception)]
    responses = [r for r in results if isinstance(r, httpx.Response)]
    codes = Counter(r.status_code for r in responses)
    assert set(codes) <= {200, 502}, codes
    assert codes[200] >= 300, codes
    for response in responses:
        if response.status_code == 502:
            error = response.json()["error"]
            assert error["type"] == "replica_failed"
            assert "signal 9" in error["message"] or "lost" in error["message"]
    recovered = server.wait_ready("life-kill", 2, timeout=30)
    assert victim not in [item["pid"] for item in recovered["replicas"]["items"]]
    assert server.invoke("life-kill", {"after": True}).status_code == 200


def test_redeploy_moves_traffic_to_the_new_revision_without_failures(server: StratusServer) -> None:
    server.deploy("basic", "app.py:Echo", name="life-roll", min_replicas=2, max_replicas=2,
                  config={"v": 1})
    server.wait_ready("life-roll", 2)
    # (when it was sent, status, revision): threads append in whatever order the GIL lets
    # them, so the list is read in the order the requests were sent.
    seen: list[tuple[float, int, int]] = []
    stop = threading.Event()

    def load() -> None:
        client = httpx.Client(base_url=server.url, timeout=30,
                              headers={"authorization": f"Bearer {server.key}"})
        while not stop.is_set():
            sent = time.monotonic()
            response = client.post("/api/deployments/life-roll/invoke", json={"sleep": 0.005})
            seen.append((sent, response.status_code,
                         int(response.headers.get("x-stratus-revision", 0))))
        client.close()

    workers = [threading.Thread(target=load) for _ in range(4)]
    for worker in workers:
        worker.start()
    time.sleep(0.5)
    # A short watch: revision 1 stays warm until it passes, then drains.
    view = server.deploy("basic", "app.py:Echo", name="life-roll", min_replicas=2,
                         max_replicas=2, config={"v": 2}, rollout={"watch_s": 1})
    assert view["revision"] == 2

    def switched() -> bool:
        status = server.status("life-roll")
        old = [i for i in status["replicas"]["items"] if i["revision"] == 1]
        return status["serving_revision"] == 2 and not old

    wait_for(switched, 30, "traffic to move to revision 2 and revision 1 to drain")
    moved = time.monotonic()
    time.sleep(0.3)
    stop.set()
    for worker in workers:
        worker.join(30)
    statuses = Counter(status for _, status, _ in seen)
    assert statuses.keys() == {200}, statuses
    revisions = [revision for _, _, revision in sorted(seen)]
    assert revisions[0] == 1
    after = [revision for sent, _, revision in seen if sent > moved]
    assert after and set(after) == {2}, "a request sent once revision 1 was gone reached it"
    switch = revisions.index(2)
    assert revisions[switch:].count(1) <= 8, "old revision may finish in-flight requests only"
    assert server.invoke("life-roll", {}).json()["config"] == {"v": 2}
    unchanged = server.deploy("basic", "app.py:Echo", name="life-roll", min_replicas=2,
                              max_replicas=2, config={"v": 2}, rollout={"watch_s": 1})
    assert unchanged["revision"] == 2, "an identical spec creates no revision"
    revisions_api = server.http.get("/api/deployments/life-roll/revisions").json()["revisions"]
    assert [r["revision"] for r in revisions_api] == [1, 2]


def test_requests_held_during_a_cold_start_follow_a_redeploy(server: StratusServer) -> None:
    """Requests waiting for revision 1's cold start move to revision 2 when it is deployed
    meanwhile; they are served there, and say so in X-Stratus-Revision."""
    server.deploy("basic", "app.py:Echo", name="life-move", min_replicas=0, max_replicas=1,
                  config={"init_sleep": 1.5})
    results: list[httpx.Response | Exception] = []
    worker = threading.Thread(target=lambda: results.extend(
        asyncio.run(_fire(server, "life-move", [{"i": i} for i in range(10)]))))
    worker.start()
    wait_for(lambda: server.status("life-move")["queued"] == 10, 10, "10 held requests")
    server.deploy("basic", "app.py:Echo", name="life-move", min_replicas=0, max_replicas=1,
                  config={"init_sleep": 0.1})
    worker.join(60)
    responses = [r for r in results if isinstance(r, httpx.Response)]
    assert [r.status_code for r in responses] == [200] * 10, results
    assert {r.headers["x-stratus-revision"] for r in responses} == {"2"}
    assert {r.json()["revision"] for r in responses} == {2}
    assert server.invoke("life-move", {}).status_code == 200


def test_scaling_changes_apply_without_a_new_revision(server: StratusServer) -> None:
    server.deploy("basic", "app.py:Echo", name="life-patch", min_replicas=1)
    server.wait_ready("life-patch")
    response = server.http.patch("/api/deployments/life-patch", json={"min_replicas": 2})
    assert response.status_code == 200, response.text
    assert response.json()["revision"] == 1
    server.wait_ready("life-patch", 2)
    response = server.http.patch("/api/deployments/life-patch", json={"max_concurrency": 3})
    assert response.json()["revision"] == 2
    assert response.json()["runtime"]["max_concurrency"] == 3


def test_restart_keeps_deployments_and_leaves_no_processes(fresh_server: StratusServer) -> None:
    server = fresh_server
    server.deploy("basic", "app.py:Echo", name="keep-warm", min_replicas=1, config={"x": 1})
    server.deploy("basic", "app.py:handler", name="keep-cold", min_replicas=0)
    server.wait_ready("keep-warm")
    assert server.invoke("keep-cold", {"name": "a"}).status_code == 200
    pids = [item["pid"] for name in ("keep-warm", "keep-cold")
            for item in server.status(name)["replicas"]["items"]]
    assert server.stop() in (0, -signal.SIGTERM)
    wait_for(lambda: not any(pid_alive(pid) for pid in pids), 10, "replicas to exit with the server")

    server.start()
    names = sorted(d["name"] for d in server.http.get("/api/deployments").json()["deployments"])
    assert names == ["keep-cold", "keep-warm"]
    view = server.wait_ready("keep-warm")
    assert view["revision"] == 1
    response = server.invoke("keep-warm", {})
    assert response.status_code == 200 and response.json()["config"] == {"x": 1}
    assert server.invoke("keep-cold", {"name": "b"}).json()["hello"] == "b"
    assert server.status("keep-cold")["revision"] == 1


def test_delete_fails_held_requests_and_stops_replicas(server: StratusServer) -> None:
    server.deploy("basic", "app.py:Echo", name="life-rm", min_replicas=1)
    pid = server.wait_ready("life-rm")["replicas"]["items"][0]["pid"]
    server.delete("life-rm")
    wait_for(lambda: not pid_alive(pid), 15, "the deleted deployment's replica to exit")
    assert server.invoke("life-rm", {}).status_code == 404
