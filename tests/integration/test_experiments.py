"""Experiments against a real server: real invocations of two revisions, conversion events,
and a report whose numbers the test works out again from what it sent."""

from __future__ import annotations

import json
import math
import signal
from collections import Counter
from typing import Any

import httpx

from server import StratusServer, wait_for

SLOW_S = 0.03  # the treatment's requests ask the handler to sleep this long


def deploy_two_revisions(server: StratusServer, name: str) -> None:
    """Revisions 1 and 2 of the echo app; they differ by config only."""
    for arm in ("a", "b"):
        server.deploy("basic", "app.py:Echo", name=name, config={"arm": arm}, min_replicas=1,
                      max_replicas=1)


def pinned(server: StratusServer, name: str, revision: int, payload: dict[str, Any]) -> int:
    response = server.invoke(name, payload, headers={"x-stratus-revision": str(revision)})
    assert response.status_code == 200, response.text
    assert response.headers["x-stratus-revision"] == str(revision)
    return revision


def events(server: StratusServer, experiment: str, body: dict[str, Any]) -> httpx.Response:
    return server.http.post(f"/api/experiments/{experiment}/events", json=body)


def z_test(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float]:
    """Two-proportion z (second minus first, pooled variance) and its two-sided p-value."""
    pooled = (x1 + x2) / (n1 + n2)
    z = (x2 / n2 - x1 / n1) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return z, math.erfc(abs(z) / math.sqrt(2))


def assert_error(response: httpx.Response, status: int, error_type: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == error_type and error["request_id"], error
    return str(error["message"])


def test_report_counts_what_was_sent_and_tests_it(server: StratusServer) -> None:
    deploy_two_revisions(server, "exp-shop")
    server.cli("experiments", "create", "exp-checkout", "--deployment", "exp-shop",
               "--variant", "control=1", "--variant", "treatment=2",
               "--weight", "control=50", "--weight", "treatment=50", "--sticky-header", "x-user")
    traffic = server.http.get("/api/deployments/exp-shop/traffic").json()
    assert traffic["traffic"] == {"1": 50, "2": 50}, traffic

    served: Counter[int] = Counter()
    for i in range(40):
        served[pinned(server, "exp-shop", 1, {"i": i})] += 1
        served[pinned(server, "exp-shop", 2, {"i": i, "sleep": SLOW_S})] += 1
    # Sticky requests: the split places the key, the response says where.
    sticky = server.invoke("exp-shop", {}, headers={"x-user": "user-42"})
    assert sticky.status_code == 200
    user_revision = int(sticky.headers["x-stratus-revision"])
    served[user_revision] += 1

    conversions: Counter[int] = Counter()
    for body, credited in [
        ({"variant": "control", "count": 4}, {1: 4}),
        ({"variant": "control"}, {1: 1}),
        ({"revision": 2, "count": 10}, {2: 10}),
        ({"events": [{"variant": "treatment", "count": 8}, {"revision": 1}]}, {2: 8, 1: 1}),
        ({"key": "user-42", "count": 2}, {user_revision: 2}),
    ]:
        response = events(server, "exp-checkout", body)
        assert response.status_code == 202, response.text
        assert response.json() == {"recorded": sum(credited.values())}
        conversions.update(credited)
    server.cli("experiments", "event", "exp-checkout", "--revision", "2", "--count", "3")
    conversions[2] += 3

    report = server.http.get("/api/experiments/exp-checkout").json()
    assert report["name"] == "exp-checkout" and report["deployment"] == "exp-shop"
    assert report["control"] == "control" and report["alpha"] == 0.05
    control, treatment = report["variants"]
    assert (control["name"], control["revision"]) == ("control", 1)
    assert (treatment["name"], treatment["revision"]) == ("treatment", 2)
    for variant, revision in ((control, 1), (treatment, 2)):
        assert variant["requests"] == served[revision], (variant, served)
        assert variant["errors"] == 0 and variant["error_ratio"] == 0.0
        assert variant["conversions"] == conversions[revision]
        assert variant["conversion_rate"] == conversions[revision] / served[revision]
    assert control["comparison"] is None

    conversion = treatment["comparison"]["conversion"]
    z, p = z_test(conversions[1], served[1], conversions[2], served[2])
    assert conversion["test"] == "two-proportion z-test"
    assert math.isclose(conversion["z"], z, rel_tol=1e-9)
    assert math.isclose(conversion["p_value"], p, rel_tol=1e-6)
    assert conversion["significant"] == (p < 0.05)
    latency = treatment["comparison"]["latency"]
    assert latency["test"] == "Welch's t-test"
    # Latency is the server's own measure: only its direction and strength can be checked.
    assert latency["t"] > 0 and latency["p_value"] < 0.01 and latency["significant"]
    assert latency["verdict"].startswith("treatment is slower than control")
    assert treatment["p50_ms"] >= SLOW_S * 1000 > control["p50_ms"]
    assert treatment["p95_ms"] >= treatment["p50_ms"]

    shown = server.cli("experiments", "show", "exp-checkout").stdout
    assert "treatment is slower than control" in shown and conversion["verdict"][:20] in shown
    raw = json.loads(server.cli("experiments", "show", "exp-checkout", "--json").stdout)
    assert raw["variants"][1]["conversions"] == conversions[2]
    listed = server.http.get("/api/experiments").json()["experiments"]
    assert [(e["name"], e["requests"], e["conversions"]) for e in listed] == \
        [("exp-checkout", sum(served.values()), sum(conversions.values()))]
    assert "exp-checkout" in server.cli("experiments", "ls").stdout

    server.cli("experiments", "rm", "exp-checkout")
    assert_error(server.http.get("/api/experiments/exp-checkout"), 404, "not_found")
    assert server.http.get("/api/deployments/exp-shop/traffic").json()["traffic"] == \
        {"1": 50, "2": 50}, "deleting an experiment leaves the split alone"
    server.delete("exp-shop")


def test_bad_requests_get_contract_errors(server: StratusServer) -> None:
    deploy_two_revisions(server, "exp-bad")
    http = server.http
    good = {"name": "exp-ok", "deployment": "exp-bad", "variants": {"a": 1, "b": 2}}

    def create(**changes: Any) -> httpx.Response:
        return http.post("/api/experiments", json={**good, **changes})

    assert "not found" in assert_error(create(deployment="exp-none"), 404, "not_found")
    message = assert_error(create(variants={"a": 1, "b": 7}), 400, "invalid_request")
    assert "no revision 7" in message
    assert_error(create(variants={"a": 1}), 400, "invalid_request")
    assert_error(create(variants={"a": 1, "b": 1}), 400, "invalid_request")
    assert_error(create(control="c"), 400, "invalid_request")
    assert_error(create(name="Bad_Name"), 400, "invalid_request")
    assert_error(create(traffic={"a": 50, "c": 50}), 400, "invalid_request")
    assert_error(create(traffic={"a": 50, "b": 40}), 400, "invalid_request")
    assert_error(create(sticky={"header": "x-a", "field": "user"}), 400, "invalid_request")
    assert_error(http.post("/api/experiments", content=b"{nope",
                           headers={"content-type": "application/json"}), 400, "invalid_json")
    assert http.get("/api/experiments").json()["experiments"] == [], "nothing half-made"

    created = create()
    assert created.status_code == 201, created.text
    assert created.json()["variants"][1]["comparison"]["conversion"]["verdict"] == \
        "not enough data: no requests yet"
    assert_error(create(), 409, "conflict")

    assert_error(events(server, "exp-none", {"variant": "a"}), 404, "not_found")
    assert_error(http.get("/api/experiments/exp-none"), 404, "not_found")
    assert_error(http.delete("/api/experiments/exp-none"), 404, "not_found")
    assert "no variant 'c'" in assert_error(events(server, "exp-ok", {"variant": "c"}), 400,
                                            "invalid_request")
    assert_error(events(server, "exp-ok", {"revision": 3}), 400, "invalid_request")
    assert_error(events(server, "exp-ok", {"variant": "a", "revision": 1}), 400, "invalid_request")
    assert_error(events(server, "exp-ok", {"variant": "a", "count": 0}), 400, "invalid_request")
    assert_error(events(server, "exp-ok", {"variant": "a", "count": 10_001}), 400,
                 "invalid_request")
    assert_error(events(server, "exp-ok", {"events": [{"variant": "a"}, {"variant": "zz"}]}),
                 400, "invalid_request")
    assert_error(http.post("/api/experiments/exp-ok/events", content=b"[1,",
                           headers={"content-type": "application/json"}), 400, "invalid_json")
    report = http.get("/api/experiments/exp-ok").json()
    assert [v["conversions"] for v in report["variants"]] == [0, 0], "a refused batch adds none"
    assert http.delete("/api/experiments/exp-ok").json() == {"deleted": "exp-ok"}
    server.delete("exp-bad")


def test_counts_survive_a_restart(fresh_server: StratusServer) -> None:
    server = fresh_server
    deploy_two_revisions(server, "exp-keep")
    body = {"name": "exp-kept", "deployment": "exp-keep", "variants": {"old": 1, "new": 2},
            "control": "new", "traffic": {"old": 50, "new": 50}}
    assert server.http.post("/api/experiments", json=body).status_code == 201
    for i in range(5):
        pinned(server, "exp-keep", 1, {"i": i})
        pinned(server, "exp-keep", 2, {"i": i})
    pinned(server, "exp-keep", 2, {"last": True})
    assert events(server, "exp-kept", {"variant": "new", "count": 3}).status_code == 202
    before = server.http.get("/api/experiments/exp-kept").json()

    assert server.stop() in (0, -signal.SIGTERM)
    server.start()
    after = server.http.get("/api/experiments/exp-kept").json()
    assert after == before
    assert [(v["name"], v["requests"], v["conversions"]) for v in after["variants"]] == \
        [("old", 5, 0), ("new", 6, 3)]
    pinned(server, "exp-keep", 1, {"after": True})
    counted = server.http.get("/api/experiments/exp-kept").json()["variants"][0]["requests"]
    assert counted == 6, "requests after the restart count on top of the saved ones"


def test_a_sticky_setting_alone_leaves_the_weights_as_they_are(server: StratusServer) -> None:
    deploy_two_revisions(server, "exp-part")

    def traffic() -> dict[str, Any]:
        view: dict[str, Any] = server.http.get("/api/deployments/exp-part/traffic").json()
        return view

    wait_for(lambda: traffic()["traffic"] == {"2": 100}, 30, "the rollout to revision 2")
    body = {"name": "exp-part", "deployment": "exp-part", "variants": {"a": 1, "b": 2},
            "sticky": {"field": "user"}}
    response = server.http.post("/api/experiments", json=body)
    assert response.status_code == 201, response.text
    after = traffic()
    assert after["traffic"] == {"2": 100}
    assert after["sticky"] == {"header": None, "field": "user"}
    pinned(server, "exp-part", 2, {"user": "u1"})
    assert server.invoke("exp-part", {"user": "u2"}).status_code == 200
    counted = server.http.get("/api/experiments/exp-part").json()["variants"]
    assert [v["requests"] for v in counted] == [0, 2]
    server.http.delete("/api/experiments/exp-part")
    server.delete("exp-part")
