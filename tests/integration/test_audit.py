"""The audit log against a real server: mutations and denials are recorded with who, what, where
from and how it went; the log is queried by time, actor and action; and ``audit verify``
reports a record edited, or deleted, in the data dir's SQLite database."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from server import TEST_ENV, StratusServer

NAME = "audited"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StratusServer]:
    # COLUMNS: the CLI's table is not folded to a pipe's 80 columns.
    instance = StratusServer(tmp_path_factory.mktemp("audit"), {**TEST_ENV, "COLUMNS": "250"})
    instance.start()
    yield instance
    instance.stop()


def _as(server: StratusServer, key: str, namespace: str | None = None) -> httpx.Client:
    return server.client_as(key, namespace)


def _records(http: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = http.get("/api/audit", params=params)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["records"]
    return found


def _verify(server: StratusServer) -> dict[str, Any]:
    response = server.http.get("/api/audit/verify")
    assert response.status_code == 200, response.text
    verdict: dict[str, Any] = response.json()
    return verdict


def _key(server: StratusServer, role: str, namespace: str = "default") -> tuple[str, str]:
    return server.mint_key(namespace, role)


def _db(server: StratusServer) -> closing[sqlite3.Connection]:
    """The server's own database, opened beside it: SQLite's locks keep a WAL database safe
    for a second writer."""
    connection = sqlite3.connect(server.data_dir / "stratus.db", timeout=10, isolation_level=None)
    return closing(connection)


def test_mutations_are_recorded_with_actor_action_target_and_result(server: StratusServer) -> None:
    started = time.time()
    server.deploy("basic", "app.py:Echo", name=NAME, min_replicas=0)
    assert server.http.patch(f"/api/deployments/{NAME}", json={"max_replicas": 2}).status_code == 200
    traffic = server.http.put(f"/api/deployments/{NAME}/traffic", json={"traffic": {"1": 100}})
    assert traffic.status_code == 200, traffic.text
    assert server.http.delete(f"/api/deployments/{NAME}").status_code == 200
    assert server.http.delete("/api/deployments/never-was").status_code == 404
    assert server.http.get(f"/api/deployments/{NAME}").status_code == 404  # a read: not recorded

    mine = list(reversed(_records(server.http, actor="bootstrap", since="5m")))
    seen = [(r["action"], r["target"], r["result"], r["status"]) for r in mine]
    assert seen[-6:] == [
        ("bundles.put", seen[-6][1], "ok", 201),
        ("deployments.create", NAME, "ok", 200),
        ("deployments.update", NAME, "ok", 200),
        ("deployments.traffic.put", NAME, "ok", 200),
        ("deployments.delete", NAME, "ok", 200),
        ("deployments.delete", "never-was", "error", 404),
    ]
    assert len(seen[-6][1]) == 64  # the bundle's digest
    for record in mine[-5:]:
        assert record["actor"] == "bootstrap" and record["namespace"] == "default"
        assert record["source"] == "127.0.0.1" and record["request_id"]
        assert started - 1 <= datetime.fromisoformat(record["at"]).timestamp() <= time.time()


def test_denials_are_recorded_with_the_source_address(server: StratusServer) -> None:
    with _as(server, "sk-not-a-real-key") as stranger:
        assert stranger.get("/api/deployments").status_code == 401
        assert stranger.post(f"/api/deployments/{NAME}/invoke", json={}).status_code == 401
        assert stranger.put("/api/nowhere/at/all").status_code == 401
    key_id, key = _key(server, "viewer")
    with _as(server, key) as viewer:
        assert viewer.delete(f"/api/deployments/{NAME}").status_code == 403
        assert viewer.post(f"/api/deployments/{NAME}/invoke", json={}).status_code == 403
        assert viewer.get("/api/audit").status_code == 403

    denied = list(reversed(_records(server.http, since="1m")))
    anonymous = [r for r in denied if r["actor"] == "anonymous"]
    assert [(r["action"], r["target"], r["status"]) for r in anonymous[-3:]] == [
        ("deployments.read", "", 401),
        ("deployments.invoke", NAME, 401),  # the data plane's own denial
        ("unmatched.put", "/api/nowhere/at/all", 401),
    ]
    for record in anonymous[-3:]:
        assert record["result"] == "denied" and record["source"] == "127.0.0.1"
        assert record["namespace"] == ""  # never authenticated
    by_viewer = [(r["action"], r["target"], r["result"], r["namespace"])
                 for r in denied if r["actor"] == f"key:{key_id}"]
    assert by_viewer == [("deployments.delete", NAME, "denied", "default"),
                         ("deployments.invoke", NAME, "denied", "default"),
                         ("audit.read", "", "denied", "default")]


def test_the_log_is_queried_by_time_actor_action_and_namespace(server: StratusServer) -> None:
    with _as(server, server.key, namespace="team") as in_team:
        assert in_team.delete("/api/deployments/ghost").status_code == 404
    everything = _records(server.http, limit=1000)
    assert [r["id"] for r in everything] == sorted((r["id"] for r in everything), reverse=True)
    assert {r["namespace"] for r in everything} >= {"default", "team", ""}  # the global admin's view

    deletes = _records(server.http, action="deployments.delete")
    assert [(r["target"], r["result"]) for r in deletes] == [
        ("ghost", "error"), (NAME, "denied"), ("never-was", "error"), (NAME, "ok")]
    assert {r["action"] for r in _records(server.http, action="deployments")} >= {
        "deployments.create", "deployments.traffic.put", "deployments.invoke"}
    assert all(r["actor"] == "anonymous" for r in _records(server.http, actor="anonymous"))
    assert len(_records(server.http, limit=2)) == 2

    middle = everything[len(everything) // 2]["at"]
    later = _records(server.http, since=middle, limit=1000)
    earlier = _records(server.http, until=middle, limit=1000)
    assert len(later) + len(earlier) == len(everything) and later and earlier
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert _records(server.http, since=future) == []

    # The global admin naming a namespace, and that namespace's own admin, see only it.
    _, team_admin = _key(server, "admin", "team")
    with _as(server, server.key, namespace="team") as in_team, _as(server, team_admin) as admin:
        for http in (in_team, admin):
            records = _records(http, limit=1000)
            assert records and {r["namespace"] for r in records} == {"team"}
        assert admin.get("/api/audit/verify").status_code == 403  # the global admin's alone

    bad = server.http.get("/api/audit", params={"since": "yesterday-ish"})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request"
    assert "since" in bad.json()["error"]["message"]
    assert server.http.get("/api/audit", params={"limit": 0}).status_code == 400


def test_cli_lists_records(server: StratusServer) -> None:
    table = server.cli("audit", "ls", "--action", "deployments.delete", "--since", "10m").stdout
    assert "deployments.delete" in table and "never-was" in table and "bootstrap" in table
    assert "deployments.create" not in table
    raw = server.cli("audit", "ls", "--actor", "anonymous", "--limit", "1", "--json").stdout
    assert '"actor": "anonymous"' in raw and raw.count('"id"') == 1


def test_verify_reports_an_edited_and_a_deleted_record(server: StratusServer) -> None:
    verdict = _verify(server)
    assert verdict["ok"] and verdict["first_bad"] is None and verdict["records"] >= 10
    assert "intact" in server.cli("audit", "verify").stdout

    (record,) = [r for r in _records(server.http, action="deployments.delete", limit=1000)
                 if r["target"] == "never-was"]
    with _db(server) as db:
        db.execute("UPDATE audit SET actor = 'somebody-else' WHERE id = ?", (record["id"],))
    verdict = _verify(server)
    assert not verdict["ok"] and verdict["first_bad"] == record["id"]
    assert "altered" in verdict["reason"] and verdict["record"]["actor"] == "somebody-else"
    broken = server.cli("audit", "verify", check=False)
    assert broken.returncode == 1
    assert f"broken at record {record['id']}" in broken.stdout and "somebody-else" in broken.stdout

    with _db(server) as db:  # put it back: the chain is whole again
        db.execute("UPDATE audit SET actor = 'bootstrap' WHERE id = ?", (record["id"],))
    assert _verify(server)["ok"]

    with _db(server) as db:
        db.execute("DELETE FROM audit WHERE id = ?", (record["id"],))
    verdict = _verify(server)
    assert not verdict["ok"] and verdict["first_bad"] == record["id"] + 1
    assert verdict["reason"] == f"record {record['id']} is missing before record {record['id'] + 1}"
