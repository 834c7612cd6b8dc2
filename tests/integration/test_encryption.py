"""Encryption at rest on a real server: no plaintext of a model, a bundle or a secret anywhere
in the data dir; tampered blobs never served; the master key rotated without rewriting a blob."""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
from safetensors.numpy import save_file

from server import APPS, StratusServer, wait_for
from stratus.cli.bundle import build_bundle
from stratus.store.plaincache import cache_root

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


def holders(root: Path, needles: list[bytes]) -> list[str]:
    """Every file under ``root``, read whole and binary, that holds any of ``needles``."""
    found = []
    for path in regular_files(root):
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


def test_no_plaintext_reaches_the_data_dir(fresh_server: StratusServer, tmp_path: Path) -> None:
    server = fresh_server
    assert stat.S_IMODE((server.data_dir / "master.key").stat().st_mode) == 0o600
    assert "generated the master key" in server.log_tail(200)
    secret = "secret-marker-" + os.urandom(8).hex()
    model_marker = b"model-marker-" + os.urandom(8).hex().encode()
    weights = make_weights(tmp_path / "w.safetensors", 1, model_marker)
    push(server, "marked", tmp_path / "w.safetensors", "1.0.0")
    created = server.http.put("/api/secrets/api-token", json={"value": secret})
    assert created.status_code == 201 and secret not in created.text
    server.deploy("secrets", "app.py:Reveal", name="reveal", models=["marked@1.0.0"],
                  config={"models": ["marked"]}, secrets={"API_TOKEN": "api-token"})

    answer = server.invoke("reveal", {"env": ["API_TOKEN"]}).json()
    assert answer["env"] == {"API_TOKEN": secret} and answer["ctx_env"] == {"API_TOKEN": secret}
    assert answer["files"]["marked"]["w.safetensors"] == sha256(weights)
    assert answer["marker"] == BUNDLE_MARKER.decode()
    cache = cache_root(server.data_dir)
    assert str(cache).startswith("/dev/shm/")
    assert answer["source"].startswith(str(cache)), "the bundle is unpacked in memory"
    assert answer["files"]["marked"]["w.safetensors:path"].startswith(str(cache))
    for path in ("/api/secrets", "/api/deployments", "/api/deployments/reveal"):
        assert secret not in server.http.get(path).text, path
    listed = server.http.get("/api/secrets").json()["secrets"]
    assert [s["name"] for s in listed] == ["api-token"] and set(listed[0]) == {
        "name", "created_at", "updated_at"}
    assert server.status("reveal")["runtime"]["secrets"] == {"API_TOKEN": "api-token"}

    bundle = build_bundle(APPS / "secrets").data
    needles = [secret.encode(), model_marker, BUNDLE_MARKER, *windows(weights), *windows(bundle)]
    assert holders(server.data_dir, needles) == []
    # The plaintext does exist, in memory only: the same search finds it there.
    found = " ".join(holders(cache, [model_marker, BUNDLE_MARKER]))
    assert "model-marker" in found and "stratus-bundle" in found, found
    assert server.stop() in (0, -15)
    assert not cache.exists(), "the decrypted artifacts go with the server"
    assert holders(server.data_dir, needles) == []  # logs included, all flushed now


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
