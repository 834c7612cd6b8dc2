"""Traffic between revisions on a real server: weighted split, sticky keys across a restart,
header pins, shadow copies, a zero-downtime canary under load, and automatic rollback."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from scipy.stats import chisquare

from server import StratusServer, wait_for

APP = ("traffic", "app.py:Variant")


def _deploy(server: StratusServer, name: str, rollout: dict[str, Any] | None = None,
            **config: Any) -> int:
    view = server.deploy(*APP, name=name, min_replicas=1, max_replicas=2, config=config,
                         rollout=rollout)
    revision: int = view["revision"]
    return revision


def _two_revisions(server: StratusServer, name: str, second: dict[str, Any] | None = None) -> None:
    """Revision 1 and 2, with all traffic on 2 once its blue-green switch is done."""
    assert _deploy(server, name, v=1) == 1
    server.wait_ready(name, 1)
    assert _deploy(server, name, v=2, **(second or {})) == 2
    wait_for(lambda: _traffic(server, name)["traffic"] == {"2": 100}, 30, "revision 2 to serve")


def _traffic(server: StratusServer, name: str) -> dict[str, Any]:
    response = server.http.get(f"/api/deployments/{name}/traffic")
    assert response.status_code == 200, response.text
    view: dict[str, Any] = response.json()
    return view


def _set(server: StratusServer, name: str, **body: Any) -> dict[str, Any]:
    response = server.http.put(f"/api/deployments/{name}/traffic", json=body)
    assert response.status_code == 200, response.text
    view: dict[str, Any] = response.json()
    return view


def _revision_of(response: httpx.Response) -> int:
    assert response.status_code == 200, response.text
    return int(response.headers["x-stratus-revision"])


def _many(server: StratusServer, name: str, count: int, workers: int = 8,
          **kwargs: Any) -> list[httpx.Response]:
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda _: server.invoke(name, {}, **kwargs), range(count)))


def test_a_90_10_split_over_2000_requests_passes_chi_square(server: StratusServer) -> None:
    _two_revisions(server, "tr-split")
    view = _set(server, "tr-split", traffic={"1": 90, "2": 10})
    assert view["traffic"] == {"1": 90, "2": 10} and view["stable"] == 1
    wait_for(lambda: all(server.invoke("tr-split", {}, headers={"x-stratus-revision": str(rev)})
                         .status_code == 200 for rev in (1, 2)), 30, "both revisions to answer")
    seen = Counter(_revision_of(r) for r in _many(server, "tr-split", 2000))
    assert set(seen) == {1, 2}
    observed = [seen[1], seen[2]]
    result = chisquare(observed, [1800, 200])
    assert result.pvalue > 0.001, (observed, result)
    stats = _traffic(server, "tr-split")["revisions"]
    assert stats["1"]["requests"] >= seen[1] and stats["2"]["requests"] >= seen[2]
    assert stats["1"]["errors"] == 0 and stats["1"]["p95_ms"] is not None


def test_header_pins_a_revision_and_bad_pins_are_clear_errors(server: StratusServer) -> None:
    _two_revisions(server, "tr-pin")
    _set(server, "tr-pin", traffic={"1": 0, "2": 100})
    for revision in (1, 2, 1):
        response = server.invoke("tr-pin", {}, headers={"x-stratus-revision": str(revision)})
        assert _revision_of(response) == revision
        assert response.json()["revision"] == revision
    assert {_revision_of(r) for r in _many(server, "tr-pin", 40)} == {2}, "weight 0: pins only"
    missing = server.invoke("tr-pin", {}, headers={"x-stratus-revision": "7"})
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"
    assert "revision 7" in missing.json()["error"]["message"]
    bad = server.invoke("tr-pin", {}, headers={"x-stratus-revision": "latest"})
    assert bad.status_code == 400 and "x-stratus-revision" in bad.json()["error"]["message"]
    bad_split = server.http.put("/api/deployments/tr-pin/traffic", json={"traffic": {"1": 60}})
    assert bad_split.status_code == 400 and "sum to 100" in bad_split.json()["error"]["message"]
    unknown = server.http.put("/api/deployments/tr-pin/traffic", json={"traffic": {"9": 100}})
    assert unknown.status_code == 400 and "no revision 9" in unknown.json()["error"]["message"]
    gone = server.http.put("/api/deployments/tr-nope/traffic", json={"traffic": {"1": 100}})
    assert gone.status_code == 404


def test_sticky_keys_keep_their_revision_across_a_restart(fresh_server: StratusServer) -> None:
    server = fresh_server
    _two_revisions(server, "tr-sticky")
    _set(server, "tr-sticky", traffic={"1": 50, "2": 50}, sticky={"header": "X-User"})
    users = [f"user-{i}" for i in range(40)]

    def assignment() -> dict[str, int]:
        return {user: _revision_of(server.invoke("tr-sticky", {},
                                                 headers={"x-user": user})) for user in users}

    first = assignment()
    assert set(first.values()) == {1, 2}, "40 keys over a 50/50 split land on both"
    assert assignment() == first
    assert _deploy(server, "tr-sticky", rollout={"promote": False}, v=3) == 3
    server.stop()
    server.start()
    view = _traffic(server, "tr-sticky")
    assert view["sticky"] == {"header": "x-user", "field": None}
    assert view["traffic"] == {"1": 50, "2": 50} and view["latest"] == 3, \
        "the split persists, and a revision recorded without promotion stays out of it"
    assert assignment() == first, "md5 of the key, not hash(): stable across restarts"
    # A JSON field works the same way, and a request without the key still gets an answer.
    _set(server, "tr-sticky", sticky={"field": "user"})
    by_field = {user: _revision_of(server.invoke("tr-sticky", {"user": user})) for user in users}
    assert by_field == first, "the same key hashes to the same revision whatever carries it"
    assert server.invoke("tr-sticky", {}).status_code == 200


def test_shadow_gets_copies_and_its_failures_and_slowness_stay_hidden(
        server: StratusServer) -> None:
    _two_revisions(server, "tr-shadow", second={"sleep_s": 1.0, "fail_ratio": 1.0})
    _set(server, "tr-shadow", traffic={"1": 100, "2": 0}, shadow=2)
    wait_for(lambda: _revision_of(server.invoke("tr-shadow", {})) == 1, 30, "revision 1")
    wait_for(lambda: (stats := _traffic(server, "tr-shadow")["revisions"]["2"])["requests"] == 1
             and stats, 30, "the first copy to warm the shadow up")
    wait_for(lambda: any(i["revision"] == 2 and i["state"] == "ready"
                         for i in server.status("tr-shadow")["replicas"]["items"]), 30, "shadow")
    started = time.monotonic()
    responses = [server.invoke("tr-shadow", {"n": i}) for i in range(10)]
    elapsed = time.monotonic() - started
    assert all(_revision_of(r) == 1 for r in responses), "the client sees the primary only"
    # Each copy sleeps 1 s and then fails; ten answers that waited for them would take 10 s.
    assert elapsed < 5, f"the primary waited for its shadow ({elapsed:.1f}s)"

    def shadow_done() -> dict[str, Any] | None:
        stats = _traffic(server, "tr-shadow")["revisions"]["2"]
        return stats if stats["requests"] + stats["copies_dropped"] >= 11 else None

    # Its eight slots (max_concurrency) take eight copies; copies never queue behind copies
    # on a warm shadow, so the other two are dropped and counted.
    stats = wait_for(shadow_done, 30, "the shadow to answer its copies")
    assert (stats["requests"], stats["copies_dropped"]) == (9, 2), stats
    assert stats["shadow"] is True and stats["errors"] == stats["requests"]
    assert _traffic(server, "tr-shadow")["revisions"]["1"]["errors"] == 0
    shadow_pids = [item["pid"] for item in server.status("tr-shadow")["replicas"]["items"]
                   if item["revision"] == 2 and item["pid"]]
    assert shadow_pids and all(os.getpriority(os.PRIO_PROCESS, pid) == 19 for pid in shadow_pids), \
        "a shadow's replicas run at the lowest CPU priority"
    counted = _outcomes(server, "tr-shadow")
    assert counted[("2", "shadow", "error")] == 9 and counted.get(("2", "shadow", "ok")) == 0
    assert counted[("1", "primary", "ok")] >= 10 and counted[("1", "primary", "error")] == 0


def _outcomes(server: StratusServer, name: str) -> dict[tuple[str, str, str], float]:
    """``stratus_revision_outcomes_total`` of one deployment from ``/metrics``."""
    found: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(server.http.get("/metrics").text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "stratus_revision_outcomes_total" and labels["deployment"] == name:
                found[(labels["revision"], labels["role"], labels["outcome"])] = sample.value
    return found


def _load(server: StratusServer, name: str, stop: threading.Event,
          seen: list[tuple[int, int]], errors: list[str]) -> None:
    client = httpx.Client(base_url=server.url, timeout=30,
                          headers={"authorization": f"Bearer {server.key}"})
    while not stop.is_set():
        try:
            response = client.post(f"/api/deployments/{name}/invoke", json={})
            seen.append((response.status_code, int(response.headers.get("x-stratus-revision", 0))))
        except httpx.TransportError as exc:
            errors.append(repr(exc))
    client.close()


def test_a_canary_under_20s_of_load_loses_nothing(server: StratusServer) -> None:
    _two_revisions(server, "tr-zero")
    assert _deploy(server, "tr-zero", v=3) == 3
    wait_for(lambda: _traffic(server, "tr-zero")["traffic"] == {"3": 100}, 30, "revision 3")
    seen: list[tuple[int, int]] = []
    errors: list[str] = []
    stop = threading.Event()
    workers = [threading.Thread(target=_load, args=(server, "tr-zero", stop, seen, errors))
               for _ in range(4)]
    began = time.monotonic()
    for worker in workers:
        worker.start()
    try:
        time.sleep(2)
        response = server.http.post("/api/deployments/tr-zero/rollout", json={
            "to": 2, "canary": 20, "step": 40, "interval_s": 4, "watch_s": 2})
        assert response.status_code == 200, response.text
        assert response.json()["rollout"]["plan"] == [20, 40, 80, 100]
        wait_for(lambda: _traffic(server, "tr-zero")["rollout"]["state"] == "succeeded", 30,
                 "the canary to finish")
        time.sleep(max(2.0, 20 - (time.monotonic() - began)))  # load runs 20 s in all
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
    statuses = Counter(status for status, _ in seen)
    assert not errors, errors[:3]
    assert statuses.keys() == {200}, statuses
    revisions = [revision for _, revision in seen]
    assert revisions[0] == 3 and revisions[-1] == 2 and len(seen) > 200
    view = _traffic(server, "tr-zero")
    assert view["traffic"] == {"2": 100} and view["stable"] == 2
    kinds = [event["kind"] for event in view["events"]]
    assert kinds.count("stage") >= 3 and "succeeded" in kinds
    wait_for(lambda: {i["revision"] for i in server.status("tr-zero")["replicas"]["items"]} == {2},
             30, "revision 3 to drain and stop")


def test_a_revision_failing_30_percent_is_rolled_back_and_a_healthy_one_promoted(
        server: StratusServer) -> None:
    _two_revisions(server, "tr-auto")
    canary = {"canary": 50, "step": 50, "interval_s": 60, "window_s": 30}
    assert _deploy(server, "tr-auto", rollout=canary, v=3, fail_ratio=0.3) == 3
    stop = threading.Event()
    seen: list[tuple[int, int]] = []
    errors: list[str] = []
    workers = [threading.Thread(target=_load, args=(server, "tr-auto", stop, seen, errors))
               for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        view = wait_for(lambda: (v := _traffic(server, "tr-auto"))["rollout"]["state"]
                        == "rolled_back" and v, 30, "the failing revision to be rolled back")
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
    assert view["traffic"] == {"2": 100}
    assert "error ratio" in view["rollout"]["reason"]
    assert any(e["kind"] == "rolled_back" for e in view["events"])
    def revision_3() -> dict[str, Any] | None:
        revisions = server.http.get("/api/deployments/tr-auto/revisions").json()["revisions"]
        found: dict[str, Any] = next(r for r in revisions if r["revision"] == 3)
        return found if found["status"] == "failed" else None

    # The rollback routes at once; the revision's status is recorded by the ordered metadata
    # writes just after, so a loaded machine can show it a moment later.
    failed = wait_for(revision_3, 10, "revision 3 to be recorded as failed")
    assert "error ratio" in failed["reason"]
    assert server.status("tr-auto")["serving_revision"] == 2
    assert "ALERT" in server.log_tail(400) and "rolled_back" in server.log_tail(400)
    alerts = server.http.get("/api/alerts").json()["alerts"]
    assert any(a["name"] == "rollout_rolled_back" and a["deployment"] == "tr-auto"
               and a["state"] == "firing" for a in alerts)
    # A healthy revision walks the same canary to the end.
    assert _deploy(server, "tr-auto", rollout={"promote": False}, v=4) == 4
    assert _traffic(server, "tr-auto")["traffic"] == {"2": 100}, "not promoted: no traffic"
    response = server.http.post("/api/deployments/tr-auto/rollout", json={
        "to": 4, "canary": 50, "step": 50, "interval_s": 1, "watch_s": 1})
    assert response.status_code == 200, response.text
    stop.clear()
    workers = [threading.Thread(target=_load, args=(server, "tr-auto", stop, seen, errors))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        wait_for(lambda: _traffic(server, "tr-auto")["rollout"]["state"] == "succeeded", 30,
                 "revision 4 to be promoted")
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
    assert _traffic(server, "tr-auto")["traffic"] == {"4": 100}


def test_rollback_returns_to_the_previous_revision(server: StratusServer) -> None:
    _two_revisions(server, "tr-back")
    response = server.http.post("/api/deployments/tr-back/rollback")
    assert response.status_code == 200, response.text
    wait_for(lambda: _traffic(server, "tr-back")["traffic"] == {"1": 100}, 30, "revision 1")
    assert _revision_of(server.invoke("tr-back", {})) == 1
    statuses = {r["revision"]: r["weight"] for r in
                server.http.get("/api/deployments/tr-back/revisions").json()["revisions"]}
    assert statuses == {1: 100, 2: 0}
    bad = server.http.post("/api/deployments/tr-back/rollout", json={"to": 5})
    assert bad.status_code == 400 and "no revision 5" in bad.json()["error"]["message"]
    malformed = server.http.post("/api/deployments/tr-back/rollout", content=b"{nope")
    assert malformed.status_code == 400
