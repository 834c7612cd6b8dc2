"""Blue-green deploys are judged on a real server: after the switch the new revision is
watched against the previous one, kept warm, and traffic goes back to it on a regression."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from server import StratusServer, wait_for

APP = ("traffic", "app.py:Variant")
# A short watch, and few requests needed to judge latency: what a test can drive in seconds.
QUICK = {"min_requests": 5}


def _deploy(server: StratusServer, name: str, rollout: dict[str, Any] | None = None,
            **config: Any) -> int:
    body: dict[str, Any] = {"name": name, "min_replicas": 1, "max_replicas": 2, "config": config}
    if rollout is not None:
        body["rollout"] = rollout
    response = server.deploy_raw(*APP, **body)
    assert response.status_code == 200, response.text
    revision: int = response.json()["revision"]
    return revision


def _traffic(server: StratusServer, name: str) -> dict[str, Any]:
    response = server.http.get(f"/api/deployments/{name}/traffic")
    assert response.status_code == 200, response.text
    view: dict[str, Any] = response.json()
    return view


def _state(server: StratusServer, name: str, state: str, timeout: float = 30) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        view = _traffic(server, name)
        return view if (view["rollout"] or {}).get("state") == state else None

    return wait_for(check, timeout, f"the rollout of {name} to be {state}")


def _pids(server: StratusServer, name: str, revision: int) -> set[int]:
    return {item["pid"] for item in server.status(name)["replicas"]["items"]
            if item["revision"] == revision and item["state"] == "ready"}


def _revision_status(server: StratusServer, name: str, revision: int) -> dict[str, Any]:
    listed = server.http.get(f"/api/deployments/{name}/revisions").json()["revisions"]
    found: dict[str, Any] = next(item for item in listed if item["revision"] == revision)
    return found


@contextmanager
def _load(server: StratusServer, name: str) -> Iterator[list[tuple[int, int]]]:
    """Requests one after another from a thread, as (status, revision), while the block runs."""
    seen: list[tuple[int, int]] = []
    stop = threading.Event()

    def run() -> None:
        with httpx.Client(base_url=server.url, timeout=30,
                          headers={"authorization": f"Bearer {server.key}"}) as client:
            while not stop.is_set():
                response = client.post(f"/api/deployments/{name}/invoke", json={})
                seen.append((response.status_code,
                             int(response.headers.get("x-stratus-revision", 0))))

    worker = threading.Thread(target=run)
    worker.start()
    try:
        yield seen
    finally:
        stop.set()
        worker.join(30)


def _first(server: StratusServer, name: str) -> set[int]:
    """Revision 1, ready and serving; the pids of its replicas."""
    assert _deploy(server, name, v=1) == 1
    server.wait_ready(name, 1)
    wait_for(lambda: server.invoke(name).status_code == 200, 30, "revision 1 to answer")
    return _pids(server, name, 1)


def test_a_blue_green_revision_failing_a_third_of_requests_is_rolled_back_on_its_own(
        server: StratusServer) -> None:
    name = "bg-bad"
    before = _first(server, name)
    with _load(server, name) as seen:
        wait_for(lambda: len(seen) >= 20, 30, "traffic on revision 1")
        assert _deploy(server, name, {"watch_s": 5, "thresholds": QUICK}, v=2, fail_every=3) == 2
        view = _state(server, name, "rolled_back")
        at_rollback = len(seen)
        wait_for(lambda: len(seen) >= at_rollback + 20, 30, "traffic after the rollback")
    assert view["traffic"] == {"1": 100} and view["stable"] == 1
    rollout = view["rollout"]
    assert (rollout["from"], rollout["to"], rollout["plan"]) == (1, 2, [100])
    ratio = re.match(r"error ratio (\d+\.\d)% against 0\.0%", rollout["reason"])
    assert ratio is not None and 25 <= float(ratio[1]) <= 34, rollout["reason"]
    kinds = [event["kind"] for event in view["events"]]
    assert kinds.index("watching") < kinds.index("rolled_back"), kinds
    assert any(status != 200 and revision == 2 for status, revision in seen[:at_rollback]), \
        "revision 2 did serve, and fail, before it was judged"
    after = seen[at_rollback + 5:]
    assert after and all(item == (200, 1) for item in after), after[:10]
    assert before <= _pids(server, name, 1), "the previous revision was kept warm, not restarted"
    failed = wait_for(lambda: (r := _revision_status(server, name, 2))["status"] == "failed" and r,
                      10, "revision 2 to be recorded as failed")
    assert failed["reason"].startswith("error ratio")
    status = server.status(name)
    assert status["status"] == "failed" and status["serving_revision"] == 1
    assert "revision 2 was rolled back: error ratio" in status["reason"]
    shown = " ".join(server.cli("traffic", name).stdout.split())
    assert "rolled_back" in shown and "error ratio" in shown
    alerts = server.http.get("/api/alerts").json()["alerts"]
    assert any(a["name"] == "rollout_rolled_back" and a["deployment"] == name for a in alerts)


def test_a_healthy_blue_green_revision_passes_its_watch(server: StratusServer) -> None:
    name = "bg-good"
    before = _first(server, name)
    with _load(server, name) as seen:
        assert _deploy(server, name, {"watch_s": 4, "thresholds": QUICK}, v=2) == 2
        view = _state(server, name, "watching")
        assert view["traffic"] == {"2": 100} and view["stable"] == 2
        assert view["rollout"]["watch_ends_at"] is not None
        status = server.status(name)
        assert status["status"] == "ready" and "rolls back to revision 1" in status["reason"]
        assert before <= _pids(server, name, 1), "revision 1 stays warm while 2 is watched"
        view = _state(server, name, "succeeded", timeout=30)
    assert view["traffic"] == {"2": 100} and (view["stable"], view["previous"]) == (2, 1)
    assert "rolled_back" not in [event["kind"] for event in view["events"]]
    assert seen and {status for status, _ in seen} == {200}
    assert _revision_status(server, name, 2)["status"] == "ready"
    wait_for(lambda: {item["revision"] for item in server.status(name)["replicas"]["items"]}
             == {2}, 30, "revision 1 to drain once the watch passed")


def test_a_rollback_or_a_deploy_during_the_watch(server: StratusServer) -> None:
    name = "bg-during"
    _first(server, name)
    assert _deploy(server, name, {"watch_s": 60}, v=2) == 2
    _state(server, name, "watching")
    # By hand: the previous revision is warm, so traffic is back on it in the answer.
    response = server.http.post(f"/api/deployments/{name}/rollback")
    assert response.status_code == 200, response.text
    view = response.json()
    assert view["traffic"] == {"1": 100} and view["stable"] == 1
    assert view["rollout"]["state"] == "aborted"
    assert int(server.invoke(name).headers["x-stratus-revision"]) == 1
    assert _revision_status(server, name, 2)["status"] == "ready", "stopped, not failed"

    # A deploy during a watch: the watched revision serves everything and is the stable one,
    # so the new rollout starts from it, and the one before becomes the previous revision.
    assert _deploy(server, name, {"watch_s": 60}, v=3) == 3
    _state(server, name, "watching")
    assert _deploy(server, name, {"watch_s": 2}, v=4) == 4
    view = _traffic(server, name)
    assert (view["rollout"]["from"], view["rollout"]["to"]) == (3, 4)
    assert any(event["kind"] == "rollout_aborted" and "superseded" in event["message"]
               for event in view["events"])
    view = _state(server, name, "succeeded")
    assert view["traffic"] == {"4": 100} and (view["stable"], view["previous"]) == (4, 3)
    refused = server.http.post(f"/api/deployments/{name}/rollout", json={"to": 4})
    assert refused.status_code == 409


def test_a_deploy_that_says_nothing_of_rollouts_is_watched_for_a_minute(
        server: StratusServer) -> None:
    """The default deploy, no ``rollout`` anywhere: blue-green, then the 60 s watch."""
    name = "bg-default"
    _first(server, name)
    assert server.status(name)["rollout"]["watch_s"] == 60.0
    assert _deploy(server, name, v=2) == 2
    rollout = _state(server, name, "watching")["rollout"]
    assert (rollout["from"], rollout["to"], rollout["plan"]) == (1, 2, [100])
    assert rollout["watch_s"] == 60.0 and rollout["watch_ends_at"] is not None
    # Ended by hand: a minute's wait would say nothing more.
    response = server.http.post(f"/api/deployments/{name}/rollback")
    assert response.status_code == 200 and response.json()["rollout"]["state"] == "aborted"


def test_rollout_settings_belong_to_the_deployment(server: StratusServer) -> None:
    name = "bg-settings"
    declared = {"watch_s": 7, "thresholds": {"min_requests": 3, "p95_min_delta_ms": 40}}
    _deploy(server, name, declared, v=1)
    assert server.status(name)["rollout"]["thresholds"]["min_requests"] == 3
    # A patch makes a revision with no rollout of its own: it takes the deployment's.
    patched = server.http.patch(f"/api/deployments/{name}", json={"config": {"v": 2}})
    assert patched.status_code == 200, patched.text
    state = _state(server, name, "watching")["rollout"]
    assert state["watch_s"] == 7 and state["thresholds"]["p95_min_delta_ms"] == 40
    # A rollout request overrides what it names, field by field.
    response = server.http.post(f"/api/deployments/{name}/rollout", json={
        "to": 1, "watch_s": 0, "thresholds": {"min_errors": 2}})
    assert response.status_code == 200, response.text
    thresholds = response.json()["rollout"]["thresholds"]
    assert (thresholds["min_errors"], thresholds["min_requests"]) == (2, 3)
    for bad in ({"watch_s": -1}, {"thresholds": {"min_requests": 0}},
                {"thresholds": {"max_error_ratio": 0.2}}):
        refused = server.deploy_raw(*APP, name=name, config={"v": 1}, rollout=bad)
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["type"] == "invalid_request" and "rollout" in error["message"]
    assert server.status(name)["rollout"]["watch_s"] == 7, "a refused deploy changes nothing"
