"""The server's side of tenant isolation: what a zygote and a replica are given, how a hello
is recognised as coming from the process it names, and (as root) what replica users may
reach on disk."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from stratus.backends import acl
from stratus.backends.access import Access, private_dir
from stratus.backends.base import CodeSpec, ReplicaSpec
from stratus.backends.isolation import Isolation, parent_pid
from stratus.runtime.connection import Peer
from stratus.runtime.messages import ReplicaConfig
from stratus.runtime.sandbox import MB, Identity, SandboxConfig

SERVER_ENV = {"PATH": "/usr/bin", "STRATUS_ADMIN_KEY": "sk-admin", "STRATUS_MASTER_KEY": "mk",
              "DATABASE_URL": "postgresql://secret"}


def _isolation(tmp_path: Path, **config: object) -> Isolation:
    data = tmp_path / "data"
    options = {"run_as": "server", "cgroups": False, **config}
    isolation = Isolation(SandboxConfig.model_validate(options), data, data / "run",
                          data / "logs", environ=SERVER_ENV)
    isolation.open()
    return isolation


def _spec(tmp_path: Path, bundle: Path, memory_mb: int | None = 256) -> ReplicaSpec:
    config = ReplicaConfig(
        replica_id="web-1-abcd", socket_path="", namespace="team-a", deployment="web",
        revision=1, max_concurrency=4, timeout_s=30, memory_mb=memory_mb, threads=1,
        log_path=str(tmp_path / "data" / "logs" / "team-a" / "web.log"),
        models=[{"files": {"w.safetensors": {"size": 100 * MB, "path": "/nowhere"}}}])
    code = CodeSpec("team-a/k", str(bundle), "app.py:M", env={"MODE": "x"}, namespace="team-a")
    return ReplicaSpec("web-1-abcd", code, config)


def test_a_replica_gets_its_own_directory_environment_and_limits(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "app.py").write_text("x = 1\n")
    isolation = _isolation(tmp_path, nofile=512)
    box = isolation.replica(_spec(tmp_path, bundle))
    workdir = Path(box.workdir)
    assert workdir == tmp_path / "data" / "run" / "ns" / "team-a" / "web" / "web-1-abcd"
    assert stat.S_IMODE(workdir.stat().st_mode) == 0o700
    assert (workdir / "app.py").read_text() == "x = 1\n"  # the bundle's files, by name
    assert box.env == {"PATH": "/usr/bin", "HOME": str(workdir), "TMPDIR": str(workdir),
                       "USER": "stratus-team-a", "LOGNAME": "stratus-team-a"}
    assert box.rlimits["NOFILE"] == (512, 512) and box.rlimits["CORE"] == (0, 0)
    # No cgroup: the address space is capped, weights (mapped) included.
    assert box.address_space > 256 * MB + 100 * MB and box.cgroups == ()
    assert isolation.exited("web-1-abcd", -9) is None  # no cgroup: nothing to tell
    assert isolation.exited("web-1-abcd", -9) is None  # and only once

    zygote = isolation.zygote(_spec(tmp_path, bundle).code)
    assert zygote.identity is None
    assert zygote.env["MODE"] == "x" and "STRATUS_ADMIN_KEY" not in zygote.env
    assert zygote.env["HOME"] == str(tmp_path / "data" / "run" / "ns" / "team-a")


def test_an_earlier_runs_directories_are_gone_at_start(tmp_path: Path) -> None:
    stale = tmp_path / "data" / "run" / "ns" / "team-a" / "web" / "old"
    stale.mkdir(parents=True)
    _isolation(tmp_path)
    assert not stale.exists()


def test_a_hello_must_come_from_the_process_it_names(tmp_path: Path) -> None:
    isolation = _isolation(tmp_path)
    me = Peer(os.getpid(), os.geteuid(), os.getegid())
    parent = os.getppid()
    assert parent_pid(os.getpid()) == parent
    assert isolation.peer_is(me, os.getpid(), parent, "team-a")
    assert not isolation.peer_is(me, os.getpid() + 1, parent, "team-a")  # names another pid
    assert not isolation.peer_is(me, os.getpid(), parent + 1, "team-a")  # not that one's child
    assert not isolation.peer_is(Peer(os.getpid(), 4242, 0), os.getpid(), None, "team-a")
    assert not isolation.peer_is(None, os.getpid(), None, "team-a")
    # Once its parent reported the pid, the process need not be alive any more.
    gone = Peer(999_999_999, os.geteuid(), 0)
    assert isolation.vouches(gone, 999_999_999, 999_999_999, parent, "team-a")
    assert not isolation.vouches(gone, 999_999_999, None, parent, "team-a")
    assert not isolation.vouches(me, os.getpid(), 12345, parent, "team-a")


root_only = pytest.mark.skipif(os.geteuid() != 0, reason="only root changes owners and groups")


@root_only
def test_private_directories_belong_to_the_namespace_user(tmp_path: Path) -> None:
    log_dir = tmp_path / "logs" / "team-a"
    log_dir.mkdir(parents=True)
    (log_dir / "web.log").write_text("from an earlier run, as root\n")
    identity = Identity(200321, 200321, (199999,))
    private_dir(log_dir, identity, own_files=True)
    for path in (log_dir, log_dir / "web.log"):
        assert (path.stat().st_uid, path.stat().st_gid) == (200321, 200321)
    assert stat.S_IMODE(log_dir.stat().st_mode) == 0o700


def _reads(uid: int, paths: list[Path]) -> dict[str, str]:
    """What user ``uid`` (in the replicas group) gets opening each path, in a forked child."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        os.setgroups([199999])
        os.setgid(uid)
        os.setuid(uid)
        seen = {}
        for path in paths:
            try:
                os.listdir(path) if path.is_dir() else path.read_bytes()
                seen[str(path)] = "ok"
            except OSError as exc:
                seen[str(path)] = errno.errorcode[exc.errno or 0]
        os.write(write_end, json.dumps(seen).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        found: dict[str, str] = json.loads(pipe.read())
    os.waitpid(pid, 0)
    return found


@root_only
def test_granted_content_is_readable_by_its_namespace_alone() -> None:
    base = Path(tempfile.mkdtemp())  # not under pytest's directories, which are 0700
    try:
        base.chmod(0o711)
        data = base / "data"
        bundle = data / "cache" / "bundles" / "b1"
        (bundle / "pkg").mkdir(parents=True)
        (bundle / "pkg" / "mod.py").write_text("")
        (bundle / "tool.sh").write_text("")
        (bundle / "tool.sh").chmod(0o700)
        weights = data / "cache" / "blobs" / "w1"
        weights.parent.mkdir()
        weights.write_bytes(b"weights")
        (data / "stratus.db").write_text("")
        (data / "stratus.db").chmod(0o644)
        (data / "logs").mkdir()
        (data / "logs" / "server.jsonl").write_text("")
        (data / "logs" / "server.jsonl").chmod(0o644)
        for directory in (data, data / "cache", data / "cache" / "bundles", bundle,
                          bundle / "pkg", weights.parent):
            directory.chmod(0o700)  # as the server makes them (umask 077)
        for path in (bundle / "pkg" / "mod.py", weights):
            path.chmod(0o600)
        access = Access(199999, (data,))
        access.close_data_dir(data, data / "logs")
        assert stat.S_IMODE((data / "stratus.db").stat().st_mode) == 0o640
        assert stat.S_IMODE((data / "logs" / "server.jsonl").stat().st_mode) == 0o640
        access.grant(bundle, 200001, tree=True)
        access.grant(weights, 200001, files=True)
        access.grant(weights, 200002, files=True)  # content shared by two namespaces
        for directory in (data, data / "cache", data / "cache" / "bundles"):
            info = directory.stat()
            assert info.st_gid == 199999 and stat.S_IMODE(info.st_mode) & 0o077 == 0o010, directory
        assert acl.user_perms(acl.read_acl(bundle / "tool.sh"), 200001) == acl.R | acl.X
        assert acl.user_perms(acl.read_acl(bundle / "pkg"), 200001) == acl.R | acl.X
        assert acl.user_perms(acl.read_acl(weights), 200002) == acl.R

        paths = [bundle, bundle / "pkg" / "mod.py", weights, data / "stratus.db"]
        assert _reads(200001, paths) == {str(bundle): "ok", str(bundle / "pkg" / "mod.py"): "ok",
                                         str(weights): "ok", str(data / "stratus.db"): "EACCES"}
        assert _reads(200002, paths) == {str(bundle): "EACCES",
                                         str(bundle / "pkg" / "mod.py"): "EACCES",
                                         str(weights): "ok", str(data / "stratus.db"): "EACCES"}
        assert _reads(200003, [weights]) == {str(weights): "EACCES"}
    finally:
        shutil.rmtree(base)
