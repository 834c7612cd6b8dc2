"""Deploys racing for a namespace's last room: N concurrent real HTTP deploys of different
deployments into a namespace whose quota holds one. Exactly one is recorded, the others get the
documented 403 ``quota_exceeded``: the quota is checked in the transaction that records the
deploy, which the namespace's deploys take in turn. On SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from threading import Barrier
from typing import Any

import httpx
import pytest
import yaml
from test_store import _postgres_database

from server import TEST_ENV, StratusServer

RACERS = 8
QUOTAS = {"race-replicas": {"max_replicas": 1}, "race-memory": {"max_memory_mb": 256}}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[StratusServer]:
    root = tmp_path_factory.mktemp(f"race-{request.param}")
    (root / "stratus.yaml").write_text(yaml.safe_dump({"quotas": {"namespaces": QUOTAS}}))
    databases: Iterator[str] = iter([]) if request.param == "sqlite" else _postgres_database()
    env = {**TEST_ENV, "STRATUS_CONFIG": str(root / "stratus.yaml")}
    if request.param == "postgres":
        env["STRATUS_DATABASE_URL"] = next(databases)
    instance = StratusServer(root / "data", env)
    instance.start()
    yield instance
    instance.stop()
    for _ in databases:  # drops the PostgreSQL database
        pass


def race(server: StratusServer, namespace: str, **fields: Any) -> list[httpx.Response]:
    """RACERS deploys of as many deployments, sent together (each on its own connection)."""
    bundle = server.upload("basic")
    start = Barrier(RACERS)

    def deploy(index: int) -> httpx.Response:
        with server.client_as(server.key, namespace) as client:
            client.get("/healthz")  # connected before the start
            start.wait()
            return client.post("/api/deployments", json={
                "name": f"racer-{index}", "code": {"bundle": bundle, "entrypoint": "app:Echo"},
                "min_replicas": 0, "max_replicas": 1, **fields})

    with ThreadPoolExecutor(RACERS) as pool:
        return list(pool.map(deploy, range(RACERS)))


@pytest.mark.parametrize(("namespace", "fields", "words"), [
    ("race-replicas", {}, "may run at most 1 replicas (quota max_replicas)"),
    ("race-memory", {"memory_mb": 256}, "may claim at most 256 MB of replica memory"),
])
def test_concurrent_deploys_cannot_overrun_the_quota(server: StratusServer, namespace: str,
                                                     fields: dict[str, Any], words: str) -> None:
    answers = race(server, namespace, **fields)
    statuses = sorted(response.status_code for response in answers)
    assert statuses == [200] + [403] * (RACERS - 1), [r.text[:200] for r in answers]
    for refused in (r for r in answers if r.status_code == 403):
        error = refused.json()["error"]
        assert error["type"] == "quota_exceeded" and words in error["message"], error
        assert error["request_id"] == refused.headers["x-request-id"]
    winner = next(r.json()["name"] for r in answers if r.status_code == 200)
    listed = server.http.get("/api/deployments", headers={"x-stratus-namespace": namespace})
    assert [d["name"] for d in listed.json()["deployments"]] == [winner]
    # The room is taken for good: a deploy after the race is refused too, and the winner may
    # still be redeployed within its own room.
    late = server.http.post("/api/deployments", headers={"x-stratus-namespace": namespace}, json={
        "name": "late", "code": {"bundle": server.upload("basic"), "entrypoint": "app:Echo"},
        "min_replicas": 0, "max_replicas": 1, **fields})
    assert late.status_code == 403, late.text
    again = server.http.post("/api/deployments", headers={"x-stratus-namespace": namespace}, json={
        "name": winner, "code": {"bundle": server.upload("basic"), "entrypoint": "app:Echo"},
        "min_replicas": 0, "max_replicas": 1, "config": {"again": True}, **fields})
    assert again.status_code == 200 and again.json()["revision"] == 2, again.text


def test_a_deleted_deployment_gives_its_room_back(server: StratusServer) -> None:
    namespace = "race-replicas"
    listed = server.http.get("/api/deployments", headers={"x-stratus-namespace": namespace})
    for deployment in listed.json()["deployments"]:
        server.http.delete(f"/api/deployments/{deployment['name']}",
                           headers={"x-stratus-namespace": namespace})
    answers = race(server, namespace)
    assert sorted(r.status_code for r in answers) == [200] + [403] * (RACERS - 1)


def test_other_namespaces_are_not_held_back(server: StratusServer) -> None:
    answers = race(server, "race-free")
    assert [r.status_code for r in answers] == [200] * RACERS, [r.text[:200] for r in answers]
