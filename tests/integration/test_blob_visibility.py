"""Blobs belong to namespaces, on a real server over HTTP, with two namespaces holding keys of
their own: B learns nothing of A's digests (a HEAD, a model push, a deploy, a job or a dataset
that names one is answered exactly as for a digest never stored), B gains a digest only by
uploading its bytes (hashed on receipt; the copy on disk is kept, not written twice), wrong
bytes gain nothing, the global admin sees everything and shares, and garbage collection takes
the ownership with the blob."""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from server import TEST_ENV, StratusServer, wait_for
from stratus.cli.bundle import Bundle, build_bundle

A, B, C, D = "blob-a", "blob-b", "blob-c", "blob-d"
APP = """\
def handler(event, context):
    return {"statusCode": 200, "body": {"marker": MARKER}}


def train(ctx):
    ctx.log_metric("marker", 1.0)
"""
# Headers that differ between any two answers, whatever they answer.
VOLATILE = {"date", "x-request-id", "x-trace-id"}
_REQUEST_ID = re.compile(r'"request_id":\s*"[^"]*"')


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StratusServer]:
    """A server of its own: the garbage collection here deletes what nothing references."""
    instance = StratusServer(tmp_path_factory.mktemp("blobs"), TEST_ENV)
    instance.start()
    yield instance
    instance.stop()


@dataclass
class Tenants:
    server: StratusServer
    a: httpx.Client
    b: httpx.Client
    c: httpx.Client
    d: httpx.Client


@pytest.fixture(scope="module")
def tenants(server: StratusServer) -> Iterator[Tenants]:
    clients = [server.client_as(server.mint_key(namespace, "developer")[1])
               for namespace in (A, B, C, D)]
    yield Tenants(server, *clients)
    for client in clients:
        client.close()


def code(tmp_path: Path) -> Bundle:
    """A bundle no other test uploads: a handler and a job of their own."""
    directory = tmp_path / f"code-{os.urandom(4).hex()}"
    directory.mkdir()
    (directory / "app.py").write_text(f"MARKER = {os.urandom(8).hex()!r}\n\n\n{APP}")
    return build_bundle(directory)


def weights() -> tuple[bytes, str]:
    data = os.urandom(4096)
    return data, hashlib.sha256(data).hexdigest()


def ghost() -> str:
    """A digest that nothing stores."""
    return hashlib.sha256(os.urandom(32)).hexdigest()


def put(client: httpx.Client, kind: str, digest: str, data: bytes) -> httpx.Response:
    return client.put(f"/api/{kind}/{digest}", content=data)


def sealed(server: StratusServer, digest: str) -> Path:
    return server.data_dir / "artifacts" / "blobs" / "sha256" / digest[:2] / digest


def owners(server: StratusServer, digest: str) -> list[str]:
    with closing(sqlite3.connect(server.data_dir / "stratus.db", timeout=10)) as db:
        rows = db.execute("SELECT namespace FROM blob_owners WHERE digest = ? ORDER BY namespace",
                          (digest,)).fetchall()
    return [str(row[0]) for row in rows]


def answer(response: httpx.Response, digest: str) -> tuple[int, dict[str, str], str]:
    """What a caller can tell from an answer about ``digest``, with what always differs (the
    request's id, the date, the digest it named itself) taken out."""
    headers = {k: v for k, v in response.headers.items() if k not in VOLATILE}
    body = _REQUEST_ID.sub("", response.text).replace(digest, "<digest>")
    return response.status_code, headers, body.replace(digest[:12], "<digest>")


def assert_as_absent(client: httpx.Client, method: str, path: str, foreign: str,
                     body: Any = None) -> None:
    """Naming ``foreign`` (another namespace's digest) gets exactly the answer a digest never
    stored gets, and it is a 404."""
    absent = ghost()
    answers = []
    for digest in (foreign, absent):
        filled = path.replace("{digest}", digest)
        content = _filled(body, digest)
        answers.append(answer(client.request(method, filled, json=content), digest))
    assert answers[0] == answers[1], answers
    assert answers[0][0] == 404, answers[0]


def _filled(body: Any, digest: str) -> Any:
    if isinstance(body, dict):
        return {key: _filled(value, digest) for key, value in body.items()}
    return digest if body == "{digest}" else body


def model_body(digest: str, size: int) -> dict[str, Any]:
    return {"version": "1.0.0", "format": "safetensors",
            "files": {"w.safetensors": {"sha256": digest, "size": size}}}


def test_another_namespaces_digest_is_as_absent_to_head(tenants: Tenants, tmp_path: Path) -> None:
    data, digest = weights()
    bundle = code(tmp_path)
    assert put(tenants.a, "blobs", digest, data).status_code == 201
    assert put(tenants.a, "bundles", bundle.digest, bundle.data).status_code == 201
    for kind, foreign in (("blobs", digest), ("bundles", bundle.digest), ("blobs", bundle.digest)):
        assert tenants.a.head(f"/api/{kind}/{foreign}").status_code == 200
        assert_as_absent(tenants.b, "HEAD", f"/api/{kind}/{{digest}}", foreign)
    # The global admin sees every stored blob, whoever uploaded it.
    assert tenants.server.http.head(f"/api/blobs/{digest}").status_code == 200
    assert tenants.server.http.head(f"/api/blobs/{ghost()}").status_code == 404


def test_b_cannot_reference_a_digest_it_has_not_uploaded(tenants: Tenants,
                                                         tmp_path: Path) -> None:
    data, digest = weights()
    bundle = code(tmp_path)
    assert put(tenants.a, "blobs", digest, data).status_code == 201
    assert put(tenants.a, "bundles", bundle.digest, bundle.data).status_code == 201
    b = tenants.b
    assert_as_absent(b, "POST", "/api/models/stolen/versions", digest,
                     model_body("{digest}", len(data)))
    assert_as_absent(b, "POST", "/api/datasets/stolen/versions", digest,
                     {"version": "1", "format": "csv",
                      "files": {"x.csv": {"sha256": "{digest}", "size": len(data)}}})
    code_ref = {"bundle": "{digest}", "entrypoint": "app.py:handler"}
    assert_as_absent(b, "POST", "/api/deployments", bundle.digest,
                     {"name": "stolen", "code": code_ref, "min_replicas": 0})
    job = {"code": {"bundle": "{digest}", "entrypoint": "app.py:train"}, "preload": []}
    assert_as_absent(b, "POST", "/api/jobs", bundle.digest, job)
    assert_as_absent(b, "POST", "/api/schedules", bundle.digest,
                     {"name": "stolen", "cron": "0 3 * * *", "job": job})
    for listing in ("/api/models", "/api/datasets", "/api/deployments", "/api/schedules"):
        assert "stolen" not in b.get(listing).text
    assert b.get("/api/jobs").json()["jobs"] == []
    assert owners(tenants.server, digest) == [A]


def test_wrong_bytes_under_a_digest_are_refused_and_gain_nothing(tenants: Tenants) -> None:
    data, digest = weights()
    assert put(tenants.a, "blobs", digest, data).status_code == 201
    before = sealed(tenants.server, digest).read_bytes()
    wrong = os.urandom(len(data))
    answers = [answer(put(tenants.b, "blobs", named, wrong), named) for named in (digest, ghost())]
    assert answers[0][0] == 400 and answers[0] == answers[1], answers
    error = put(tenants.b, "blobs", digest, wrong).json()["error"]
    assert error["type"] == "invalid_request" and error["request_id"]
    assert error["message"].startswith(f"upload digest mismatch: expected {digest}, got ")
    assert tenants.b.head(f"/api/blobs/{digest}").status_code == 404
    pushed = tenants.b.post("/api/models/wrong/versions", json=model_body(digest, len(data)))
    assert pushed.status_code == 404, pushed.text
    assert owners(tenants.server, digest) == [A]
    assert sealed(tenants.server, digest).read_bytes() == before  # A's copy is untouched
    assert tenants.a.post("/api/models/right/versions",
                          json=model_body(digest, len(data))).status_code == 201


def test_an_upload_proves_possession_and_stores_the_bytes_once(tenants: Tenants,
                                                              tmp_path: Path) -> None:
    data, digest = weights()
    bundle = code(tmp_path)
    server = tenants.server
    assert put(tenants.a, "blobs", digest, data).status_code == 201
    assert put(tenants.a, "bundles", bundle.digest, bundle.data).status_code == 201
    copies = {d: sealed(server, d).stat() for d in (digest, bundle.digest)}
    contents = {d: sealed(server, d).read_bytes() for d in (digest, bundle.digest)}
    fresh, fresh_digest = weights()  # B's first upload of bytes nobody had
    first = put(tenants.b, "blobs", fresh_digest, fresh)
    again = put(tenants.b, "blobs", digest, data)  # bytes A has stored
    # B cannot tell the two apart: the same status and body, but for the digest itself.
    assert (first.status_code, again.status_code) == (201, 201)
    assert first.json() == {"digest": fresh_digest, "size": len(fresh), "created": True}
    assert again.json() == {"digest": digest, "size": len(data), "created": True}
    assert answer(first, fresh_digest)[1] == answer(again, digest)[1]
    assert put(tenants.b, "bundles", bundle.digest, bundle.data).status_code == 201
    for stored in (digest, bundle.digest):  # kept as it was: no second copy written
        now = sealed(server, stored).stat()
        assert (now.st_ino, now.st_mtime_ns) == (copies[stored].st_ino, copies[stored].st_mtime_ns)
        assert sealed(server, stored).read_bytes() == contents[stored]
    assert not list((server.data_dir / "artifacts" / "tmp").iterdir())
    assert owners(server, digest) == [A, B]
    # Owned now: told so without the bytes being needed again.
    repeat = put(tenants.b, "blobs", digest, data)
    assert repeat.status_code == 200
    assert repeat.json() == {"digest": digest, "size": len(data), "created": False}
    b = tenants.b
    assert b.head(f"/api/blobs/{digest}").status_code == 200
    pushed = b.post("/api/models/mine/versions", json=model_body(digest, len(data)))
    assert pushed.status_code == 201, pushed.text
    deployed = b.post("/api/deployments", json={
        "name": "mine", "code": {"bundle": bundle.digest, "entrypoint": "app.py:handler"},
        "min_replicas": 0})
    assert deployed.status_code == 200, deployed.text
    job = b.post("/api/jobs", json={"code": {"bundle": bundle.digest,
                                             "entrypoint": "app.py:train"}, "preload": []})
    assert job.status_code == 201, job.text
    ended = wait_for(lambda: b.get(f"/api/jobs/{job.json()['id']}").json()["status"]
                     in ("succeeded", "failed"), 60, "B's job to end")
    assert ended
    assert b.get(f"/api/jobs/{job.json()['id']}").json()["status"] == "succeeded"


def test_the_global_admin_sees_every_blob_and_shares_it(tenants: Tenants,
                                                        tmp_path: Path) -> None:
    server = tenants.server
    data, digest = weights()
    assert put(tenants.a, "blobs", digest, data).status_code == 201
    assert tenants.c.head(f"/api/blobs/{digest}").status_code == 404
    shared = server.http.post(f"/api/blobs/{digest}/shares", json={"namespace": C})
    assert shared.status_code == 201, shared.text
    assert shared.json() == {"digest": digest, "namespace": C, "created": True}
    again = server.http.post(f"/api/blobs/{digest}/shares", json={"namespace": C})
    assert again.status_code == 200 and again.json()["created"] is False
    assert tenants.c.head(f"/api/blobs/{digest}").status_code == 200
    pushed = tenants.c.post("/api/models/given/versions", json=model_body(digest, len(data)))
    assert pushed.status_code == 201, pushed.text
    unknown = server.http.post(f"/api/blobs/{ghost()}/shares", json={"namespace": C})
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found"
    refused = tenants.a.post(f"/api/blobs/{digest}/shares", json={"namespace": B})
    assert refused.status_code == 403 and owners(server, digest) == [A, C]

    def shares() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = server.http.get(
            "/api/audit", params={"action": "blobs.shares", "since": "5m"}).json()["records"]
        return found

    records = wait_for(lambda: [r for r in shares() if r["target"] == f"{digest} {C}"], 10,
                       "the share's audit record")
    assert [(r["actor"], r["result"], r["status"]) for r in records] == [
        ("bootstrap", "ok", 200), ("bootstrap", "ok", 201)]
    # What the admin deploys in a namespace, from a bundle the namespace never uploaded,
    # becomes that namespace's: its own keys may use the code from then on.
    bundle = code(tmp_path)
    assert put(tenants.a, "bundles", bundle.digest, bundle.data).status_code == 201
    deployed = server.http.post("/api/deployments", headers={"x-stratus-namespace": D}, json={
        "name": "given", "code": {"bundle": bundle.digest, "entrypoint": "app.py:handler"},
        "min_replicas": 0})
    assert deployed.status_code == 200, deployed.text
    assert tenants.d.head(f"/api/bundles/{bundle.digest}").status_code == 200
    assert owners(server, bundle.digest) == [A, D]


def test_garbage_collection_takes_the_ownership_with_the_blob(tenants: Tenants) -> None:
    server = tenants.server
    kept_data, kept = weights()
    assert put(tenants.a, "blobs", kept, kept_data).status_code == 201
    assert tenants.a.post("/api/models/kept/versions",
                          json=model_body(kept, len(kept_data))).status_code == 201
    assert put(tenants.b, "blobs", kept, kept_data).status_code == 201  # owned, never referenced
    stray_data, stray = weights()
    assert put(tenants.a, "blobs", stray, stray_data).status_code == 201
    time.sleep(2.2)  # both blobs are older than the grace now
    written = sealed(server, stray).stat().st_mtime_ns
    assert put(tenants.b, "blobs", stray, stray_data).status_code == 201
    assert sealed(server, stray).stat().st_mtime_ns == written  # not written again
    collected = server.http.post("/api/gc", json={"grace_s": 2})
    assert collected.status_code == 200, collected.text
    # B was given the stray blob within the grace: it may be about to reference it.
    assert sealed(server, stray).exists() and owners(server, stray) == [A, B]
    time.sleep(2.2)
    collected = server.http.post("/api/gc", json={"grace_s": 2})
    assert collected.status_code == 200 and collected.json()["blobs_removed"] >= 1
    assert not sealed(server, stray).exists() and owners(server, stray) == []
    for client in (tenants.a, tenants.b):
        assert client.head(f"/api/blobs/{stray}").status_code == 404
    assert sealed(server, kept).exists() and owners(server, kept) == [A, B]
    assert tenants.b.head(f"/api/blobs/{kept}").status_code == 200
