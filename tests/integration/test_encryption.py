"""Encryption at rest on a real server: no plaintext of a model, a bundle or a secret in the
data dir but the decrypted copies replicas map, which go with the server (and a killed one's
with the next start), or none at all with the copies in memory; tampered blobs never served;
the master key rotated without rewriting a blob."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from safetensors.numpy import save_file

from server import APPS, TEST_ENV, StratusServer, wait_for
from stratus.backends.acl import GROUP, GROUP_OBJ, OTHER, UNDEFINED, USER, read_acl
from stratus.cli.bundle import build_bundle
from stratus.store.plaincache import SHM, cache_root
from takeover import take_over

BUNDLE_MARKER = b"stratus-bundle-plaintext-marker-5b1e0c9a"  # in tests/apps/secrets/app.py


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_weights(path: Path, seed: int, marker: bytes = b"") -> bytes:
    noise = np.random.default_rng(seed).standard_normal(300_000).astype(np.float32)
    save_file({"marker": np.frombuffer(marker or b"-", dtype=np.uint8), "noise": noise}, str(path))
    return path.read_bytes()


def push(server: StratusServer, name: str, path: Path, version: str) -> None:
    data = path.read_bytes()
    digest = sha256(data)
    assert server.http.put(f"/api/blobs/{digest}", content=data).status_code in (200, 201)
    files = {path.name: {"sha256": digest, "size": len(data)}}
    response = server.http.post(f"/api/models/{name}/versions",
                                json={"version": version, "format": "safetensors", "files": files})
    assert response.status_code == 201, response.text


def windows(data: bytes, count: int = 8, width: int = 48) -> list[bytes]:
    """Slices from all over ``data``: found anywhere, they would betray a plaintext copy."""
    step = max(1, (len(data) - width) // count)
    return [data[offset : offset + width] for offset in range(0, len(data) - width, step)][:count]


def regular_files(root: Path) -> Iterator[Path]:
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory) / name
            if stat.S_ISREG(path.lstat().st_mode):  # not the server's socket
                yield path


def holders(root: Path, needles: list[bytes], outside: Path | None = None) -> list[str]:
    """Every file under ``root`` (but not under ``outside``), read whole and binary, that holds
    any of ``needles``."""
    found = []
    for path in regular_files(root):
        if outside is not None and path.is_relative_to(outside):
            continue
        content = path.read_bytes()
        found += [f"{path} holds {needle[:24]!r}" for needle in needles if needle in content]
    return found


def sealed_blobs(server: StratusServer) -> list[Path]:
    return [p for p in (server.data_dir / "artifacts" / "blobs" / "sha256").glob("*/*")
            if len(p.name) == 64]


def flip_middle(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.seek(size // 2)
        data = handle.read(16)
        handle.seek(size // 2)
        handle.write(bytes(b ^ 0xFF for b in data))
    assert path.stat().st_size == size


def error_of(response: httpx.Response) -> dict[str, str]:
    error: dict[str, str] = response.json()["error"]
    return error


def _reveal_marked(server: StratusServer, tmp_path: Path) -> tuple[dict[str, Any], list[bytes]]:
    """A model, a bundle and a secret, each with a marker, served by one replica; what it
    answered, and slices of each plaintext that would betray a copy of it anywhere."""
    secret = "secret-marker-" + os.urandom(8).hex()
    model_marker = b"model-marker-" + os.urandom(8).hex().encode()
    weights = make_weights(tmp_path / "w.safetensors", 1, model_marker)
    push(server, "marked", tmp_path / "w.safetensors", "1.0.0")
    created = server.http.put("/api/secrets/api-token", json={"value": secret})
    assert created.status_code == 201 and secret not in created.text
    server.deploy("secrets", "app.py:Reveal", name="reveal", models=["marked@1.0.0"],
                  config={"models": ["marked"]}, secrets={"API_TOKEN": "api-token"})
    answer: dict[str, Any] = server.invoke("reveal", {"env": ["API_TOKEN"]}).json()
    assert answer["env"] == {"API_TOKEN": secret} and answer["ctx_env"] == {"API_TOKEN": secret}
    assert answer["files"]["marked"]["w.safetensors"] == sha256(weights)
    assert answer["marker"] == BUNDLE_MARKER.decode()
    for path in ("/api/secrets", "/api/deployments", "/api/deployments/reveal"):
        assert secret not in server.http.get(path).text, path
    bundle = build_bundle(APPS / "secrets").data
    return answer, [secret.encode(), model_marker, BUNDLE_MARKER, *windows(weights),
                    *windows(bundle)]


def test_no_plaintext_reaches_the_store_and_the_copies_go_with_the_server(
        fresh_server: StratusServer, tmp_path: Path) -> None:
    """By default replicas map decrypted copies on the data disk, in ``run/plain``: private
    to the server (and the replicas it grants), and removed when it stops. Nothing else in
    the data dir (the artifact store, the database, the logs) ever holds plaintext."""
    server = fresh_server
    assert stat.S_IMODE((server.data_dir / "master.key").stat().st_mode) == 0o600
    assert "generated the master key" in server.log_tail(200)
    answer, needles = _reveal_marked(server, tmp_path)
    listed = server.http.get("/api/secrets").json()["secrets"]
    assert [s["name"] for s in listed] == ["api-token"] and set(listed[0]) == {
        "name", "created_at", "updated_at"}
    assert server.status("reveal")["runtime"]["secrets"] == {"API_TOKEN": "api-token"}

    cache = cache_root(server.data_dir)
    assert cache == server.data_dir / "run" / "plain"
    assert answer["source"].startswith(str(cache)), "the bundle is unpacked in the cache"
    copy = Path(answer["files"]["marked"]["w.safetensors:path"])
    assert copy.parent == cache / "blobs"
    # The server's, read-only, and readable by the namespace's user alone (an ACL entry;
    # the group bits of the mode show the ACL's mask): no group, no others.
    info = copy.stat()
    assert info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) & 0o337 == 0, oct(info.st_mode)
    entries = read_acl(copy)
    assert entries[(GROUP_OBJ, UNDEFINED)] == entries[(OTHER, UNDEFINED)] == 0, entries
    named = {ident for (tag, ident), perms in entries.items() if tag in (USER, GROUP) and perms}
    if os.geteuid() == 0:  # replicas run as the namespace's own user
        uids = json.loads((server.data_dir / "sandbox-uids.json").read_text())
        assert named == {uids["default"]}, entries
    assert stat.S_IMODE(cache.stat().st_mode) & 0o007 == 0, "others may not enter the cache"
    assert holders(server.data_dir, needles, outside=cache) == []
    found = " ".join(holders(cache, needles[1:3]))  # the model's and the bundle's markers
    assert "model-marker" in found and "stratus-bundle" in found, found
    assert server.stop() in (0, -15)
    assert not cache.exists(), "the decrypted artifacts go with the server"
    assert holders(server.data_dir, needles) == []  # logs included, all flushed now


def test_plaintext_in_memory_never_reaches_the_data_dir(tmp_path: Path) -> None:
    """``artifacts.plaintext: memory``: the copies are tmpfs (/dev/shm), never on a disk."""
    if not SHM.is_dir():
        pytest.skip("no /dev/shm")
    server = StratusServer(tmp_path / "data", TEST_ENV)
    server.data_dir.mkdir()
    (server.data_dir / "stratus.yaml").write_text("artifacts:\n  plaintext: memory\n")
    try:
        server.start()
        answer, needles = _reveal_marked(server, tmp_path)
        cache = cache_root(server.data_dir, "memory")
        assert cache.is_relative_to(SHM) and cache.is_dir()
        assert answer["source"].startswith(str(cache))
        assert answer["files"]["marked"]["w.safetensors:path"].startswith(str(cache))
        assert not (server.data_dir / "run" / "plain").exists()
        assert holders(server.data_dir, needles) == []
        assert "model-marker" in " ".join(holders(cache, needles[1:2]))
        assert server.stop() in (0, -15)
        assert not cache.exists(), "the decrypted artifacts go with the server"
        assert holders(server.data_dir, needles) == []
    finally:
        server.stop()


def _decrypts(server: StratusServer) -> int:
    return server.log_path.read_text().count("INFO stratus.artifacts: decrypted model")


def test_copies_a_killed_server_left_are_removed_at_the_next_start(fresh_server: StratusServer,
                                                                   tmp_path: Path) -> None:
    server = fresh_server
    make_weights(tmp_path / "w.safetensors", 4)
    push(server, "crash-m", tmp_path / "w.safetensors", "1.0.0")
    server.deploy("secrets", "app.py:Reveal", name="crash-d", models=["crash-m@1.0.0"],
                  config={"models": ["crash-m"]}, min_replicas=1, ready=1)
    cache = cache_root(server.data_dir)
    copy = Path(server.invoke("crash-d").json()["files"]["crash-m"]["w.safetensors:path"])
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    assert copy.is_file(), "nothing removes a killed server's plaintext but the next start"
    stale = [cache / "blobs" / ("0" * 64), cache / "tmp" / "blob-interrupted"]
    for path in stale:  # what a server killed mid-decryption, or with an older version, left
        path.write_bytes(b"stale plaintext")
    decrypted = _decrypts(server)

    server.start()
    server.wait_ready("crash-d", 1)
    assert not any(path.exists() for path in stale)
    assert _decrypts(server) == decrypted + 1, "the copy is decrypted again, not trusted"
    answer = server.invoke("crash-d").json()
    assert answer["files"]["crash-m"]["w.safetensors"] == sha256((tmp_path / "w.safetensors").read_bytes())


def test_a_takeover_keeps_the_copies_its_replicas_map(fresh_server: StratusServer,
                                                      tmp_path: Path) -> None:
    server = fresh_server
    weights = make_weights(tmp_path / "w.safetensors", 5)
    push(server, "tk-m", tmp_path / "w.safetensors", "1.0.0")
    server.deploy("secrets", "app.py:Reveal", name="tk-d", models=["tk-m@1.0.0"],
                  config={"models": ["tk-m"]}, min_replicas=1, max_replicas=1, ready=1)
    before = server.invoke("tk-d").json()
    copy = Path(before["files"]["tk-m"]["w.safetensors:path"])
    inode, decrypted = copy.stat().st_ino, _decrypts(server)

    handed = take_over(server)
    assert handed.returncode == 0, handed.stderr
    after = server.invoke("tk-d").json()
    assert after["pid"] == before["pid"], "the adopted replica serves on"
    # Reused, not decrypted again: the adopted replica maps this very file.
    assert copy.stat().st_ino == inode and _decrypts(server) == decrypted
    # A replica the new version starts maps it too.
    server.deploy("secrets", "app.py:Reveal", name="tk-d2", models=["tk-m@1.0.0"],
                  config={"models": ["tk-m"]})
    fresh = server.invoke("tk-d2").json()
    assert fresh["files"]["tk-m"] == {"w.safetensors": sha256(weights),
                                      "w.safetensors:path": str(copy)}
    assert copy.stat().st_ino == inode and _decrypts(server) == decrypted
    assert server.stop() in (0, -15)
    assert not cache_root(server.data_dir).exists()


def test_a_tampered_blob_is_never_served(server: StratusServer, tmp_path: Path) -> None:
    weights = make_weights(tmp_path / "w.safetensors", 2)
    digest = sha256(weights)
    push(server, "tamper-m", tmp_path / "w.safetensors", "1.0.0")
    server.deploy("secrets", "app.py:Reveal", name="tamper-d", models=["tamper-m@1.0.0"],
                  config={"models": ["tamper-m"]}, min_replicas=0)
    blob = server.data_dir / "artifacts" / "blobs" / "sha256" / digest[:2] / digest
    flip_middle(blob)

    response = server.invoke("tamper-d")  # a replica starts: its weights are checked first
    assert response.status_code == 503, response.text
    message = error_of(response)["message"]
    assert error_of(response)["type"] == "deployment_failed"
    assert f"tamper-m@1.0.0 (w.safetensors) is corrupted: blob {digest[:12]} fails its integrity " \
           "check (segment 1 of 2 fails authentication)" in message, message
    refused = server.deploy_raw("secrets", "app.py:Reveal", name="tamper-d2",
                                models=["tamper-m@1.0.0"], config={"models": ["tamper-m"]})
    assert refused.status_code == 400 and "is corrupted" in error_of(refused)["message"]
    # The check before an upload removes it; uploading the same file again repairs it.
    assert server.http.head(f"/api/blobs/{digest}").status_code == 404
    push(server, "tamper-m", tmp_path / "w.safetensors", "1.0.1")

    def served() -> httpx.Response | None:  # after the failed start's back-off
        response = server.invoke("tamper-d")
        return response if response.status_code == 200 else None

    answer = wait_for(served, 30, "tamper-d to start from the repaired blob", 0.5).json()
    assert answer["files"]["tamper-m"]["w.safetensors"] == digest
    server.delete("tamper-d")


def test_a_tampered_bundle_fails_the_deploy_clearly(server: StratusServer, tmp_path: Path) -> None:
    source = tmp_path / "bundle.tar.gz"
    with tarfile.open(source, "w:gz") as archive:
        archive.add(APPS / "secrets" / "app.py", arcname="app.py")
        noise = tmp_path / "noise.bin"
        noise.write_bytes(os.urandom(1 << 21))
        archive.add(noise, arcname="noise.bin")
    data = source.read_bytes()
    digest = sha256(data)
    assert server.http.put(f"/api/bundles/{digest}", content=data).status_code == 201
    flip_middle(server.data_dir / "artifacts" / "blobs" / "sha256" / digest[:2] / digest)
    response = server.http.post("/api/deployments", json={
        "name": "tampered-code", "code": {"bundle": digest, "entrypoint": "app.py:Reveal"}})
    assert response.status_code == 400, response.text
    assert f"bundle {digest} is corrupted: blob {digest[:12]} fails its integrity check" \
        in error_of(response)["message"]
    assert server.http.get("/api/deployments/tampered-code").status_code == 404


def test_rotating_the_master_key_rewrites_no_blob(fresh_server: StratusServer, tmp_path: Path) -> None:
    server = fresh_server
    weights = make_weights(tmp_path / "w.safetensors", 3)
    push(server, "rot-m", tmp_path / "w.safetensors", "1.0.0")
    assert server.http.put("/api/secrets/token", json={"value": "rotate-me"}).status_code == 201
    server.deploy("secrets", "app.py:Reveal", name="rot-d", models=["rot-m@1.0.0"],
                  config={"models": ["rot-m"]}, secrets={"TOKEN": "token"}, min_replicas=1, ready=1)
    key_file = server.data_dir / "master.key"
    old_key = key_file.read_text()
    blobs = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sealed_blobs(server)}
    assert len(blobs) == 2  # the model file and the code bundle
    wrapped = {p: Path(f"{p}.key").read_text() for p in blobs}

    namespaced = server.http.post("/api/keys", json={"namespace": "default", "role": "admin"})
    assert namespaced.status_code in (200, 201), namespaced.text
    denied = httpx.post(f"{server.url}/api/master-key/rotate",
                        headers={"authorization": f"Bearer {namespaced.json()['key']}"})
    assert denied.status_code == 403 and key_file.read_text() == old_key

    rotated = server.cli("keys", "rotate-master")
    text = " ".join(rotated.stderr.split())
    assert "data keys re-wrapped: 2 artifacts, 1 secrets" in text, text
    assert key_file.read_text() != old_key and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sealed_blobs(server)} == blobs
    assert all(Path(f"{p}.key").read_text() != wrapped[p] for p in blobs)
    assert server.invoke("rot-d", {"env": ["TOKEN"]}).json()["env"] == {"TOKEN": "rotate-me"}

    # A new server process has only the new key: everything opens under it.
    assert server.stop() in (0, -15)
    server.start()
    server.wait_ready("rot-d", 1)
    answer = server.invoke("rot-d", {"env": ["TOKEN"]}).json()
    assert answer["env"] == {"TOKEN": "rotate-me"}
    assert answer["files"]["rot-m"]["w.safetensors"] == sha256(weights)
