"""Tenants cannot see each other. Namespace B holds one of every resource (a deployment with
logs, usage, a trace and an alert; a model version; an experiment; audit records; a secret
when the server has secrets); namespace A's admin must not be able to read, list, change,
invoke or even learn of any of it: every answer about B's names is the answer a name that never
existed gets, and no body A receives names B."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from safetensors.numpy import save as save_safetensors

from server import TEST_ENV, StratusServer, wait_for

A, B = "tenant-a", "tenant-b"
# B's names, each with a name of the same length that exists nowhere.
BRAVO = {"deployment": "bravo-echo", "model": "bravo-weights", "experiment": "bravo-exp",
         "secret": "bravo-secret"}
GHOST = {"deployment": "ghost-echo", "model": "ghost-weights", "experiment": "ghost-exp",
         "secret": "ghost-secret"}
TRACE = os.urandom(16).hex()
ECHO = "app.py:Echo"
_REQUEST_ID = re.compile(r'"request_id":\s*"[^"]*"')


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StratusServer]:
    data = tmp_path_factory.mktemp("isolation")
    # Fires on B's first request, so that B has an alert to hide.
    rule = {"name": "any-latency", "kind": "p95_latency", "threshold": 0, "min_requests": 1}
    (data / "stratus.yaml").write_text(yaml.safe_dump({"alerts": {"rules": [rule],
                                                                  "interval_s": 0.2}}))
    instance = StratusServer(data, TEST_ENV)
    instance.start()
    yield instance
    instance.stop()


@dataclass
class World:
    server: StratusServer
    a: httpx.Client  # A's admin
    b: httpx.Client  # B's admin
    b_key_id: str
    bundle: str  # the digest of B's code
    has_secrets: bool


def _admin(server: StratusServer, namespace: str) -> tuple[httpx.Client, str]:
    key_id, key = server.mint_key(namespace, "admin")
    return server.client_as(key), key_id


def _ok(response: httpx.Response, *codes: int) -> dict[str, Any]:
    assert response.status_code in (codes or (200,)), response.text
    body: dict[str, Any] = response.json()
    return body


def _fill_bravo(server: StratusServer, b: httpx.Client, has_secrets: bool) -> str:
    digest = server.upload("basic", b)
    deployment = BRAVO["deployment"]
    for version in (1, 2):  # two revisions, for the experiment; the second takes no traffic
        _ok(b.post("/api/deployments", json={
            "name": deployment, "code": {"bundle": digest, "entrypoint": ECHO},
            "config": {"v": version}, "rollout": {"promote": version == 1}}))
    invoked = b.post(f"/api/deployments/{deployment}/invoke", json={"hello": "b"},
                     headers={"traceparent": f"00-{TRACE}-{os.urandom(8).hex()}-01"})
    assert invoked.status_code == 200, invoked.text
    assert invoked.headers["x-trace-id"] == TRACE
    _ok(b.post("/api/experiments", json={"name": BRAVO["experiment"], "deployment": deployment,
                                         "variants": {"one": 1, "two": 2}}), 201)
    weights = save_safetensors({"w": np.arange(4, dtype=np.float32)})
    sha = hashlib.sha256(weights).hexdigest()
    _ok(b.put(f"/api/blobs/{sha}", content=weights), 200, 201)
    _ok(b.post(f"/api/models/{BRAVO['model']}/versions", json={
        "version": "1.0.0", "format": "safetensors",
        "files": {"model.safetensors": {"sha256": sha, "size": len(weights)}}}), 201)
    if has_secrets:
        _ok(b.put(f"/api/secrets/{BRAVO['secret']}", json={"value": "bravo-value"}), 200, 201)
    # What B's reads show once the background parts have caught up: the test's premise.
    wait_for(lambda: b.get(f"/api/traces/{TRACE}").status_code == 200, 10, "B's trace")
    wait_for(lambda: deployment in b.get("/api/alerts").text, 10, "B's alert")
    wait_for(lambda: deployment in b.get("/api/usage/records").text, 10, "B's usage records")
    return digest


@pytest.fixture(scope="module")
def world(server: StratusServer) -> Iterator[World]:
    a, _ = _admin(server, A)
    b, b_key_id = _admin(server, B)
    paths = server.http.get("/openapi.json").json()["paths"]
    has_secrets = any(path.startswith("/api/secrets") for path in paths)
    bundle = _fill_bravo(server, b, has_secrets)
    yield World(server, a, b, b_key_id, bundle, has_secrets)
    a.close()
    b.close()


def _scrubbed(response: httpx.Response, names: dict[str, str]) -> str:
    text = _REQUEST_ID.sub("", response.text)
    for kind, name in names.items():
        text = text.replace(name, f"<{kind}>")
    return text


def _assert_like_a_ghost(http: httpx.Client, method: str, template: str,
                         body: Any = None, status: int = 404) -> None:
    """B's names get exactly the answer a name that never existed gets, and it is ``status``."""
    answers = [http.request(method, template.format(**names), json=_filled(body, names))
               for names in (BRAVO, GHOST)]
    real, ghost = answers
    label = f"{method} {template}"
    assert real.status_code == status, f"{label}: {real.status_code} {real.text}"
    assert ghost.status_code == real.status_code, f"{label}: ghost got {ghost.status_code}"
    assert _scrubbed(real, BRAVO) == _scrubbed(ghost, GHOST), f"{label}: {real.text} vs {ghost.text}"
    assert B not in real.text, f"{label} names B: {real.text}"


def _filled(body: Any, names: dict[str, str]) -> Any:
    if isinstance(body, str):
        return body.format(**names)
    if isinstance(body, dict):
        return {key: _filled(value, names) for key, value in body.items()}
    return body


def _assert_silent_about_b(response: httpx.Response, label: str) -> None:
    assert response.status_code == 200, f"{label}: {response.status_code} {response.text}"
    for word in ("bravo", B):
        assert word not in response.text, f"{label} shows {word!r}: {response.text[:500]}"


READS = (
    "/api/deployments/{deployment}", "/api/deployments/{deployment}/revisions",
    "/api/deployments/{deployment}/traffic", "/api/deployments/{deployment}/autoscaler",
    "/api/deployments/{deployment}/logs", "/api/deployments/{deployment}/series",
    "/api/deployments/{deployment}/invocations", "/api/models/{model}",
    "/api/models/{model}/versions/1.0.0", "/api/experiments/{experiment}",
    "/v2/models/{deployment}", "/v2/models/{deployment}/ready",
    "/v2/models/{deployment}/versions/1", "/v2/models/{deployment}/versions/1/ready",
    "/v1/models/{deployment}",
)
LISTS = (
    "/api/deployments", "/api/models", "/api/experiments", "/v1/models", "/api/dashboard",
    "/api/alerts", "/api/usage", "/api/usage?by=namespace", "/api/usage?by=revision",
    "/api/usage/records", "/api/usage/records?deployment=bravo-echo", "/api/keys",
)
INFER = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
# (method, template, body, what a name that never existed gets)
MUTATIONS: tuple[tuple[str, str, Any, int], ...] = (
    ("PATCH", "/api/deployments/{deployment}", {"min_replicas": 0}, 404),
    ("PUT", "/api/deployments/{deployment}/traffic", {"traffic": {"2": 100}}, 404),
    ("POST", "/api/deployments/{deployment}/rollout", {"to": 2}, 404),
    ("POST", "/api/deployments/{deployment}/rollback", None, 404),
    ("POST", "/api/deployments/{deployment}/invoke", {"hello": "a"}, 404),
    ("POST", "/v2/models/{deployment}/infer", INFER, 404),
    ("POST", "/v2/models/{deployment}/versions/1/infer", INFER, 404),
    ("POST", "/v1/completions", {"model": "{deployment}", "prompt": "hi"}, 404),
    ("POST", "/v1/chat/completions",
     {"model": "{deployment}", "messages": [{"role": "user", "content": "hi"}]}, 404),
    ("POST", "/v1/embeddings", {"model": "{deployment}", "input": "hi"}, 404),
    ("POST", "/api/models/{model}/versions/1.0.0/promote", {"stage": "production"}, 404),
    ("DELETE", "/api/models/{model}/versions/1.0.0", None, 404),
    ("DELETE", "/api/models/{model}", None, 404),
    ("POST", "/api/experiments/{experiment}/events", {"variant": "one"}, 404),
    ("DELETE", "/api/experiments/{experiment}", None, 404),
    ("POST", "/api/experiments",
     {"name": "alpha-exp", "deployment": "{deployment}", "variants": {"one": 1, "two": 2}}, 404),
    # A's own deployment may not read B's secret or serve B's model.
    ("POST", "/api/deployments", {"name": "alpha-echo", "llm": "{model}@1.0.0"}, 400),
    ("DELETE", "/api/deployments/{deployment}", None, 404),
)


@pytest.mark.parametrize("template", READS)
def test_reading_b_by_name_is_404_like_a_name_that_never_existed(world: World,
                                                                   template: str) -> None:
    _assert_like_a_ghost(world.a, "GET", template)


def test_lists_reports_and_logs_of_a_say_nothing_of_b(world: World) -> None:
    for path in LISTS:
        _assert_silent_about_b(world.a.get(path), path)
    # A's audit trail holds A's own attempts on B's names (whenever they ran), never B's records.
    records = _ok(world.a.get("/api/audit", params={"limit": 10_000}))["records"]
    assert {record["namespace"] for record in records} <= {A}, records
    assert f"key:{world.b_key_id}" not in {record["actor"] for record in records}
    # Not vacuous: B's own views do show its things.
    for path, shown in (("/api/deployments", "bravo-echo"), ("/api/models", "bravo-weights"),
                        ("/api/experiments", "bravo-exp"), ("/api/alerts", "bravo-echo"),
                        ("/api/dashboard", "bravo-echo"), ("/api/usage/records", "bravo-echo"),
                        ("/api/audit", B)):
        assert shown in world.b.get(path).text, f"B's {path} does not show {shown}"


def test_b_trace_is_404_for_a_even_when_a_joins_it(world: World) -> None:
    missing = world.a.get(f"/api/traces/{TRACE}")
    assert missing.status_code == 404 and B not in missing.text, missing.text
    # A's own request under B's trace id puts A's span in the same trace: A sees that, only.
    joined = world.a.post("/api/deployments/alpha-nothing/invoke", json={},
                          headers={"traceparent": f"00-{TRACE}-{os.urandom(8).hex()}-01"})
    assert joined.status_code == 404 and joined.headers["x-trace-id"] == TRACE
    trace = world.a.get(f"/api/traces/{TRACE}")
    assert trace.status_code == 200, trace.text
    spans = trace.json()["spans"]
    assert [span["attributes"].get("stratus.namespace") for span in spans] == [A], spans
    _assert_silent_about_b(trace, "A's view of the shared trace")
    # B, for its part, still sees its own spans and none of A's.
    theirs = _ok(world.b.get(f"/api/traces/{TRACE}"))["spans"]
    assert len(theirs) > 1 and "alpha-nothing" not in str(theirs)
    assert {s["attributes"].get("stratus.namespace") for s in theirs} == {B, None}


def test_naming_b_namespace_is_404_like_a_namespace_that_never_existed(world: World) -> None:
    for method, path in (("GET", "/api/deployments"), ("GET", "/api/deployments/bravo-echo"),
                         ("POST", "/api/deployments/bravo-echo/invoke"), ("GET", "/v1/models"),
                         ("GET", "/api/usage"), ("GET", "/api/audit")):
        answers = [world.a.request(method, path, headers={"x-stratus-namespace": namespace},
                                   json={} if method == "POST" else None)
                   for namespace in (B, "tenant-z")]
        real, ghost = answers
        assert real.status_code == ghost.status_code == 404, (path, real.text, ghost.text)
        assert (_scrubbed(real, {"namespace": B}) == _scrubbed(ghost, {"namespace": "tenant-z"})
                ), (real.text, ghost.text)
    # Nor can A's admin mint a key for B.
    minted = [world.a.post("/api/keys", json={"namespace": namespace, "role": "admin"})
              for namespace in (B, "tenant-z")]
    assert minted[0].status_code == minted[1].status_code == 404, minted[0].text
    assert _scrubbed(minted[0], {"namespace": B}) == _scrubbed(minted[1], {"namespace": "tenant-z"})


def test_a_cannot_see_or_revoke_b_keys_and_secrets(world: World) -> None:
    revoked = world.a.delete(f"/api/keys/{world.b_key_id}")
    assert revoked.status_code == 404 and B not in revoked.text, revoked.text
    assert world.b.get("/api/keys").status_code == 200  # B's key still works
    if not world.has_secrets:
        pytest.skip("the server has no /api/secrets routes yet")
    _assert_silent_about_b(world.a.get("/api/secrets"), "/api/secrets")
    _assert_like_a_ghost(world.a, "DELETE", "/api/secrets/{secret}")
    assert BRAVO["secret"] in world.b.get("/api/secrets").text


def test_a_cannot_change_or_invoke_b_things(world: World) -> None:
    before = _ok(world.b.get(f"/api/deployments/{BRAVO['deployment']}"))
    requests_before = len(_ok(world.b.get("/api/usage/records"))["records"])
    for method, template, body, status in MUTATIONS:
        _assert_like_a_ghost(world.a, method, template, body, status)
    if world.has_secrets:
        # The same code as B's, which A must upload itself to deploy.
        bundle = world.server.upload("basic", world.a)
        assert bundle == world.bundle
        reading = {"name": "alpha-echo", "code": {"bundle": bundle, "entrypoint": ECHO},
                   "secrets": {"TOKEN": "{secret}"}}
        _assert_like_a_ghost(world.a, "POST", "/api/deployments", reading, 400)
    after = _ok(world.b.get(f"/api/deployments/{BRAVO['deployment']}"))
    assert (after["revision"], after["traffic"]) == (before["revision"], before["traffic"])
    assert _ok(world.b.get(f"/api/models/{BRAVO['model']}"))["versions"][0]["stage"] == "dev"
    assert _ok(world.b.get(f"/api/experiments/{BRAVO['experiment']}"))
    assert len(_ok(world.b.get("/api/usage/records"))["records"]) == requests_before


def test_the_global_admin_sees_b(world: World) -> None:
    server = world.server
    as_b = {"x-stratus-namespace": B}
    assert BRAVO["deployment"] in server.http.get("/api/deployments", headers=as_b).text
    assert server.http.get(f"/api/traces/{TRACE}").status_code == 200
    assert BRAVO["deployment"] in server.http.get("/api/alerts").text
