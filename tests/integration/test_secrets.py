"""Secrets on a real server: the API's rules, the CLI, namespaces kept apart, and deployments
that read them as environment variables (a missing one refuses the deploy; a new value
reaches new replicas)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from server import APPS, StratusServer, wait_for


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


def reveal(server: StratusServer, name: str, *env: str) -> dict[str, str | None]:
    response = server.invoke(name, {"env": list(env)})
    assert response.status_code == 200, response.text
    values: dict[str, str | None] = response.json()["env"]
    return values


def test_the_api_takes_values_and_never_gives_them_back(server: StratusServer) -> None:
    put = server.http.put
    created = put("/api/secrets/api.key_1", json={"value": "v1"})
    assert created.status_code == 201 and created.json()["created"] is True
    assert set(created.json()) == {"name", "created_at", "updated_at", "created"}
    replaced = put("/api/secrets/api.key_1", json={"value": "v2"})
    assert replaced.status_code == 200 and replaced.json()["created"] is False
    assert replaced.json()["created_at"] == created.json()["created_at"]
    listed = server.http.get("/api/secrets").json()["secrets"]
    assert {"name", "created_at", "updated_at"} == set(next(s for s in listed if s["name"] == "api.key_1"))
    assert "v2" not in server.http.get("/api/secrets").text

    for bad in ("-leading", "trailing-", "sp ace", "x" * 129, "semi;colon"):
        response = put(f"/api/secrets/{bad}", json={"value": "x"})
        assert response.status_code == 400, bad
        assert error_of(response)["type"] == "invalid_request"
    assert put("/api/secrets/ok", json={"value": 5}).status_code == 400
    assert put("/api/secrets/ok", json={"value": "x", "extra": 1}).status_code == 400
    nul = put("/api/secrets/ok", json={"value": "a\x00b"})
    assert nul.status_code == 400 and "NUL" in error_of(nul)["message"]
    big = put("/api/secrets/ok", json={"value": "x" * (64 * 1024 + 1)})
    assert big.status_code == 413 and error_of(big)["type"] == "payload_too_large"
    missing = server.http.delete("/api/secrets/never-set")
    assert missing.status_code == 404 and error_of(missing)["type"] == "not_found"
    assert server.http.delete("/api/secrets/api.key_1").json() == {"deleted": "api.key_1"}

    # Namespaces are apart: another namespace neither lists nor reads this one's secrets.
    put("/api/secrets/shared-name", json={"value": "in-default"})
    other = {"x-stratus-namespace": "secrets-other"}
    assert server.http.get("/api/secrets", headers=other).json() == {"secrets": []}
    refused = server.http.post("/api/deployments", headers=other, json={
        "name": "other-reader", "code": {"bundle": server.upload("secrets"), "entrypoint": "app.py:Reveal"},
        "secrets": {"TOKEN": "shared-name"}})
    assert refused.status_code == 400, refused.text
    assert error_of(refused)["type"] == "deploy_error"
    assert "secret(s) 'shared-name' not set in namespace 'secrets-other'" in error_of(refused)["message"]


def test_a_deployment_reads_secrets_as_its_environment(server: StratusServer) -> None:
    server.http.put("/api/secrets/db-password", json={"value": "first"})
    missing = server.deploy_raw("secrets", "app.py:Reveal", name="env-reader",
                                secrets={"DB_PASSWORD": "db-password", "API": "nope"})
    assert missing.status_code == 400 and "'nope' not set in namespace 'default'" in \
        error_of(missing)["message"]
    clash = server.deploy_raw("secrets", "app.py:Reveal", name="env-reader", env={"API": "x"},
                              secrets={"API": "db-password"})
    assert clash.status_code == 400 and "API set both in env and from secrets" in error_of(clash)["message"]
    bad = server.deploy_raw("secrets", "app.py:Reveal", name="env-reader",
                            secrets={"1BAD": "db-password"})
    assert bad.status_code == 400

    view = server.deploy("secrets", "app.py:Reveal", name="env-reader", min_replicas=1, ready=1,
                         env={"PLAIN": "visible"}, secrets={"DB_PASSWORD": "db-password"})
    assert view["runtime"]["secrets"] == {"DB_PASSWORD": "db-password"}
    assert reveal(server, "env-reader", "DB_PASSWORD", "PLAIN", "STRATUS_MASTER_KEY") == {
        "DB_PASSWORD": "first", "PLAIN": "visible", "STRATUS_MASTER_KEY": None}
    in_use = server.http.delete("/api/secrets/db-password")
    assert in_use.status_code == 409 and "env-reader (revision 1)" in error_of(in_use)["message"]

    # A new value reaches the replicas that start from now on: here, a new revision's.
    server.http.put("/api/secrets/db-password", json={"value": "second"})
    assert reveal(server, "env-reader", "DB_PASSWORD") == {"DB_PASSWORD": "first"}
    patched = server.http.patch("/api/deployments/env-reader", json={"env": {"PLAIN": "changed"}})
    assert patched.status_code == 200, patched.text
    wait_for(lambda: reveal(server, "env-reader", "DB_PASSWORD", "PLAIN") == {
        "DB_PASSWORD": "second", "PLAIN": "changed"}, 30, "the new revision with the new value")
    server.delete("env-reader")
    assert server.http.delete("/api/secrets/db-password").status_code == 200


def test_the_cli(server: StratusServer, tmp_path: Path) -> None:
    created = server.cli("secrets", "set", "cli-token", stdin="from stdin\n")
    assert "secret cli-token created" in created.stderr
    value_file = tmp_path / "token.txt"
    value_file.write_text("from a file\n")
    updated = server.cli("secrets", "set", "cli-token", "--from-file", str(value_file))
    assert "secret cli-token updated" in updated.stderr
    listed = server.cli("secrets", "ls").stdout
    assert "cli-token" in listed and "from a file" not in listed
    assert "cli-token" in server.cli("secrets", "ls", "--json").stdout
    both = server.cli("secrets", "set", "x", "v", "--from-file", str(value_file), check=False)
    assert both.returncode == 1 and "not both" in both.stderr

    server.cli("deploy", f"{APPS / 'secrets' / 'app.py'}:Reveal", "--name", "cli-reader",
               "--secret", "TOKEN=cli-token", "--min-replicas", "0")
    assert reveal(server, "cli-reader", "TOKEN") == {"TOKEN": "from a file\n"}
    refused = server.cli("secrets", "rm", "cli-token", check=False)
    assert refused.returncode == 1 and "conflict (409)" in " ".join(refused.stderr.split())
    server.delete("cli-reader")
    assert "deleted secret cli-token" in server.cli("secrets", "rm", "cli-token").stderr
    gone = server.cli("secrets", "rm", "cli-token", check=False)
    assert gone.returncode == 1 and "not_found (404)" in gone.stderr
