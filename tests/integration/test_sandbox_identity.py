"""A server running as root with no ``sandbox`` section at all (the default): its replicas and
job workers run as their namespace's own uid, never root, and can read neither the server's
secrets (master key, metadata database) nor another namespace's code, decrypted weights,
secrets (its replica's environment), logs or working directory, nor signal another
namespace's replica. Each refusal is asserted on its own. A server that cannot drop refuses to
start, unless told to run replicas as root."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_encryption import make_weights, push
from test_jobs import run, wait_ended

from server import STRATUS, TEST_ENV, StratusServer
from stratus.backends.acl import GROUP, OTHER, UNDEFINED, USER, R, read_acl
from stratus.store.plaincache import cache_root

REPLICAS_GROUP = 199999  # sandbox.group_id's default
B_SECRET = "id-b-secret-value-4f1c"

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="only a server running as root runs replicas as other users")


@pytest.fixture(scope="module")
def server() -> Iterator[StratusServer]:
    # Not under pytest's temporary directory: other pytest sessions reset its mode to 0700.
    base = Path(tempfile.mkdtemp(prefix="stratus-identity-"))
    base.chmod(0o711)
    instance = StratusServer(base / "data", TEST_ENV)  # no stratus.yaml: the defaults
    try:
        instance.start()
        yield instance
    finally:
        if instance.process is not None:
            instance.stop()
        shutil.rmtree(base, ignore_errors=True)


def _as(server: StratusServer, namespace: str) -> StratusServer:
    server.http.headers["x-stratus-namespace"] = namespace
    return server


@pytest.fixture(scope="module")
def neighbour(server: StratusServer) -> Iterator[dict[str, Any]]:
    """Namespace ``id-b``: a replica serving an encrypted model, with what it was given."""
    weights = Path(tempfile.mkdtemp(prefix="stratus-weights-")) / "w.safetensors"
    make_weights(weights, 7)
    try:
        push(_as(server, "id-b"), "b-model", weights, "1.0.0")
        put = server.http.put("/api/secrets/b-token", json={"value": B_SECRET})
        assert put.status_code in (200, 201), put.text
        server.deploy("secrets", "app.py:Reveal", name="b-reveal", models=["b-model@1.0.0"],
                      config={"models": ["b-model"]}, secrets={"B_TOKEN": "b-token"},
                      min_replicas=1, max_replicas=1)
        answer = server.invoke("b-reveal", {"env": ["B_TOKEN"]})
        assert answer.status_code == 200, answer.text
        seen: dict[str, Any] = answer.json()
        assert seen["env"] == {"B_TOKEN": B_SECRET}  # the secret is in its environment
        yield {"pid": seen["pid"], "bundle_file": seen["source"],
               "bundle_dir": str(Path(seen["source"]).parent),
               "weights": seen["files"]["b-model"]["w.safetensors:path"]}
    finally:
        server.http.headers.pop("x-stratus-namespace", None)
        shutil.rmtree(weights.parent)


def _uids(server: StratusServer) -> dict[str, int]:
    uids: dict[str, int] = json.loads((server.data_dir / "sandbox-uids.json").read_text())
    return uids


def _forbidden(server: StratusServer, neighbour: dict[str, Any]) -> dict[str, str]:
    data = server.data_dir
    return {"master key": str(data / "master.key"), "database": str(data / "stratus.db"),
            "neighbour's bundle file": neighbour["bundle_file"],
            "neighbour's bundle": neighbour["bundle_dir"],
            "neighbour's decrypted weights": neighbour["weights"],
            # Its secrets reach it only in its environment.
            "neighbour's environment": f"/proc/{neighbour['pid']}/environ",
            "neighbour's logs": str(data / "logs" / "id-b"),
            "neighbour's working directories": str(data / "run" / "ns" / "id-b")}


def test_a_replica_runs_as_its_namespace_and_reaches_nothing_of_the_server_or_others(
        server: StratusServer, neighbour: dict[str, Any]) -> None:
    forbidden = _forbidden(server, neighbour)
    assert all(Path(path).exists() for path in forbidden.values()), forbidden
    try:
        _as(server, "id-a").deploy("sandbox", "app.py:Inspect", name="a-probe", max_replicas=1)
        seen = server.invoke("a-probe", {
            "probe": list(forbidden.values()),
            "signals": {"pid": neighbour["pid"], "numbers": [0, int(signal.SIGTERM)]}}).json()
    finally:
        server.http.headers.pop("x-stratus-namespace", None)
    assert seen["uid"] != 0, "the replica runs as root"
    uids = _uids(server)
    assert seen["uid"] == uids["id-a"], (seen["uid"], uids)
    assert seen["imported_as"] == seen["uid"]  # the zygote imported the code as that user
    assert uids["id-b"] != uids["id-a"]
    assert seen["sees_app"]  # its own bundle, through its working directory
    for what, path in forbidden.items():
        assert seen["probes"][path] == "EACCES", f"{what} ({path}): {seen['probes'][path]}"
    assert seen["signals"] == {"0": "EPERM", str(int(signal.SIGTERM)): "EPERM"}

    # The neighbour still serves, from the same process, and still reads its weights.
    again = _as(server, "id-b").invoke("b-reveal")
    server.http.headers.pop("x-stratus-namespace")
    assert again.status_code == 200 and again.json()["pid"] == neighbour["pid"]


def test_decrypted_weights_are_a_file_on_disk_that_only_their_namespace_reads(
        server: StratusServer, neighbour: dict[str, Any]) -> None:
    """The copy is the server's, read-only, in the data dir's ``run/plain``; an ACL entry lets
    the namespace's user alone read it (another namespace's replica gets EACCES: the test
    above), and the replicas group may only pass through its directories, not list them."""
    cache = cache_root(server.data_dir)
    weights = Path(neighbour["weights"])
    assert weights.parent == cache / "blobs" and cache == server.data_dir / "run" / "plain"
    info = weights.stat()
    assert info.st_uid == 0 and stat.S_IMODE(info.st_mode) & 0o337 == 0, oct(info.st_mode)
    entries = read_acl(weights)
    readers = {ident for (tag, ident), perms in entries.items() if tag == USER and perms & R}
    assert readers == {_uids(server)["id-b"]}, entries
    assert not any(tag == GROUP for tag, _ in entries) and entries[(OTHER, UNDEFINED)] == 0
    for directory in (cache.parent, cache, cache / "blobs"):
        held = directory.stat()
        assert (held.st_uid, held.st_gid, stat.S_IMODE(held.st_mode)) == \
            (0, REPLICAS_GROUP, 0o710), (directory, oct(held.st_mode))


def test_a_job_worker_runs_as_its_namespace_and_reaches_nothing_of_the_server_or_others(
        server: StratusServer, neighbour: dict[str, Any]) -> None:
    forbidden = _forbidden(server, neighbour)
    try:
        job = run(_as(server, "id-a"), "train.py:probe",
                  params={"paths": "\n".join(forbidden.values()), "pid": neighbour["pid"]})
        view = wait_ended(server, job["id"])
    finally:
        server.http.headers.pop("x-stratus-namespace", None)
    assert view["status"] == "succeeded", view["error"]
    logged = view["params"]
    assert logged["uid"] != 0, "the job worker runs as root"
    assert logged["uid"] == _uids(server)["id-a"], logged
    for index, (what, path) in enumerate(forbidden.items()):
        assert logged[f"path{index}"] == "EACCES", f"{what} ({path}): {logged[f'path{index}']}"
    assert (logged["signal0"], logged[f"signal{int(signal.SIGTERM)}"]) == ("EPERM", "EPERM")


# setpriv (util-linux) runs the server as root without CAP_SYS_ADMIN: no mount namespace.
NO_SYS_ADMIN = ["setpriv", "--bounding-set", "-sys_admin", "--inh-caps", "-sys_admin"]


def test_a_server_that_cannot_drop_refuses_to_start_unless_told_to_run_replicas_as_root(
        tmp_path: Path) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is not installed")
    python = Path(os.path.realpath(sys.base_prefix))
    if all(directory.stat().st_mode & 0o001 for directory in python.parents):
        pytest.skip("Python is readable by other users here: no mount namespace is needed")
    base = Path(tempfile.mkdtemp(prefix="stratus-no-drop-"))
    base.chmod(0o711)
    try:
        refused = StratusServer(base / "refused", TEST_ENV)
        refused.data_dir.mkdir()
        started = subprocess.run(
            [*NO_SYS_ADMIN, STRATUS, "serve", "--port", str(refused.port), "--data-dir",
             str(refused.data_dir)], env=refused.env, capture_output=True, text=True, timeout=30)
        message = " ".join(started.stderr.split())
        assert started.returncode != 0, "the server started, to run user code as root"
        assert "replicas would have to run as root" in message, message
        assert "unshare(CLONE_NEWNS): Operation not permitted" in message, message
        assert "set sandbox.run_as: server" in message, message

        told = StratusServer(base / "told", TEST_ENV)
        told.data_dir.mkdir()
        (told.data_dir / "stratus.yaml").write_text("sandbox:\n  run_as: server\n")
        told.wrapper = NO_SYS_ADMIN
        try:
            told.start()
            told.deploy("sandbox", "app.py:Inspect", name="as-root", max_replicas=1)
            answer = told.invoke("as-root", {})
            assert answer.status_code == 200 and answer.json()["uid"] == 0, answer.text
        finally:
            told.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_run_as_shared_runs_every_namespace_as_one_unprivileged_user() -> None:
    base = Path(tempfile.mkdtemp(prefix="stratus-shared-"))
    base.chmod(0o711)
    shared = StratusServer(base / "data", TEST_ENV)
    shared.data_dir.mkdir()
    (shared.data_dir / "stratus.yaml").write_text("sandbox:\n  run_as: shared\n  shared_uid: 199990\n")
    try:
        shared.start()
        seen = {}
        for namespace in ("sh-a", "sh-b"):
            _as(shared, namespace).deploy("sandbox", "app.py:Inspect", name="who", max_replicas=1)
            seen[namespace] = shared.invoke("who", {"probe": [
                str(shared.data_dir / "master.key"), str(shared.data_dir / "stratus.db")]}).json()
        shared.http.headers.pop("x-stratus-namespace")
        for answer in seen.values():
            assert (answer["uid"], answer["imported_as"]) == (199990, 199990), answer
            assert set(answer["probes"].values()) == {"EACCES"}, answer["probes"]
    finally:
        shared.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_the_plaintext_cache_is_reachable_before_anything_is_granted() -> None:
    """A built-in server's zygote has no bundle or model granted before it starts, and checks
    that its user reaches the cache: a fresh server opens the cache's path to the replicas
    group (search only) when it starts, not at the first grant."""
    base = Path(tempfile.mkdtemp(prefix="stratus-cache-"))
    base.chmod(0o711)
    fresh = StratusServer(base / "data", TEST_ENV)
    try:
        fresh.start()
        root = cache_root(fresh.data_dir)
        for directory in (root.parent, root):
            info = directory.stat()
            assert info.st_gid == REPLICAS_GROUP and info.st_mode & 0o777 == 0o710, \
                (directory, oct(info.st_mode), info.st_gid)
    finally:
        fresh.stop()
        shutil.rmtree(base, ignore_errors=True)
