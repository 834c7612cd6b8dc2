"""A full data dir, for real: a server on a small tmpfs, filled up. Writes fail with the 507
in the contract's shape, serving goes on, the database stays sound, and freeing space is
enough for writes to work again."""

from __future__ import annotations

import errno
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server import TEST_ENV, StratusServer, wait_for
from stratus.cli.bundle import build_bundle

SIZE = "24m"  # the server, its database and one deployment fit with room to spare
CONFIG_BYTES = 256 * 1024  # a deploy's config this big needs fresh pages in the database


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0755", "tmpfs",
                              str(mount_point)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture
def server_on_small_disk(small_disk: Path) -> Iterator[StratusServer]:
    instance = StratusServer(small_disk / "data", {**TEST_ENV, "STRATUS_MAX_BODY_BYTES": str(2**22)})
    instance.start()
    yield instance
    instance.stop()


def _fill(path: Path) -> None:
    with open(path, "wb", buffering=0) as filler:
        block = b"\0" * 65536
        try:
            while True:
                filler.write(block)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        try:  # the last partial block
            while True:
                filler.write(b"\0" * 512)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def _assert_507(response: httpx.Response) -> None:
    assert response.status_code == 507, response.text
    error = response.json()["error"]
    assert error["type"] == "insufficient_storage" and "full" in error["message"]
    assert error["request_id"] == response.headers["x-request-id"]


def _deploy(server: StratusServer, digest: str, name: str) -> httpx.Response:
    return server.http.post("/api/deployments", json={
        "name": name, "code": {"bundle": digest, "entrypoint": "app.py:Echo"},
        "config": {"padding": "x" * CONFIG_BYTES}, "min_replicas": 0})


def test_a_full_data_dir_refuses_writes_serves_and_recovers(
        server_on_small_disk: StratusServer, tmp_path: Path) -> None:
    server = server_on_small_disk
    server.deploy("basic", "app.py:Echo", name="full-serving", min_replicas=1, max_replicas=1,
                  ready=1)
    digest = server.upload("basic")
    filler = server.data_dir / "filler"
    _fill(filler)

    # An upload of new bytes: the artifact store's write.
    other = tmp_path / "other"
    other.mkdir()
    (other / "app.py").write_text((Path(__file__).parents[1] / "apps/basic/app.py").read_text()
                                  + "\n# another bundle, " + "y" * 100_000 + "\n")
    bundle = build_bundle(other)
    _assert_507(server.http.put(f"/api/bundles/{bundle.digest}", content=bundle.data))

    # Metadata writes: acknowledged ones are kept; once the database cannot grow, a 507.
    acknowledged = []
    refused: httpx.Response | None = None
    for index in range(40):
        response = _deploy(server, digest, f"full-{index}")
        if response.status_code != 200:
            refused = response
            break
        acknowledged.append(f"full-{index}")
    assert refused is not None, "the database never filled up"
    _assert_507(refused)

    # Serving goes on, and readiness tells of the full disk without failing.
    for _ in range(20):
        served = server.invoke("full-serving", {"still": "serving"})
        assert served.status_code == 200, served.text
    readiness = httpx.get(f"{server.url}/readyz", timeout=5)
    assert readiness.status_code == 200
    storage = readiness.json()["storage"]
    assert storage["status"] == "full" and {"artifacts", "metadata"} <= set(storage["full"])

    # Nothing written before is damaged.
    database = sqlite3.connect(f"file:{server.data_dir / 'stratus.db'}?mode=ro", uri=True)
    assert database.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    database.close()

    filler.unlink()  # space is back: no restart
    assert server.http.put(f"/api/bundles/{bundle.digest}", content=bundle.data).status_code \
        in (200, 201)
    again = _deploy(server, digest, "full-after")
    assert again.status_code == 200, again.text
    # The usage writer and the audit log retry on their own (the audit's back-off is at most
    # 5 s): each clears its flag with its next write.
    wait_for(lambda: httpx.get(f"{server.url}/readyz", timeout=5).json()["storage"]["status"]
             == "ok", 15, "every writer to write again")
    for name in [*acknowledged, "full-after"]:
        assert server.http.get(f"/api/deployments/{name}").status_code == 200, name
