"""The server's side of tenant isolation: what a zygote and a replica are given, how a hello
is recognised as coming from the process it names, and (as root) what replica users may
reach on disk."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from stratus.backends.access import GroupAccess, out_of_reach, private_dir
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


def test_out_of_reach_names_the_directory_to_open() -> None:
    base = Path(tempfile.mkdtemp())  # not under pytest's directories, which are 0700
    try:
        base.chmod(0o755)
        closed = base / "closed"
        (closed / "inside").mkdir(parents=True, mode=0o755)
        closed.chmod(0o700)
        problem = out_of_reach([(closed / "inside", False)])
        assert problem is not None and f"{closed} is mode 0700" in problem
        assert f"chmod o+x {closed}" in problem
        closed.chmod(0o711)
        assert out_of_reach([(closed / "inside", False)]) is None
        assert f"chmod o+xr {closed}" in str(out_of_reach([(closed, True)]))
    finally:
        shutil.rmtree(base)


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


@root_only
def test_the_replicas_group_reaches_only_what_is_granted(tmp_path: Path) -> None:
    data = tmp_path / "data"
    bundle = data / "cache" / "bundles" / "b1"
    (bundle / "pkg").mkdir(parents=True)
    (bundle / "pkg" / "mod.py").write_text("")
    (bundle / "tool.sh").write_text("")
    (bundle / "tool.sh").chmod(0o700)
    (data / "stratus.db").write_text("")
    (data / "stratus.db").chmod(0o644)
    (data / "logs").mkdir()
    (data / "logs" / "server.jsonl").write_text("")
    (data / "logs" / "server.jsonl").chmod(0o644)
    for directory in (data, data / "cache", data / "cache" / "bundles"):
        directory.chmod(0o700)  # as the server makes them (umask 077)
    access = GroupAccess(199999, (data,))
    access.close_data_dir(data, data / "logs")
    assert stat.S_IMODE((data / "stratus.db").stat().st_mode) == 0o640
    assert stat.S_IMODE((data / "logs" / "server.jsonl").stat().st_mode) == 0o640
    access.grant(bundle, tree=True)
    for directory in (data, data / "cache", data / "cache" / "bundles"):
        info = directory.stat()
        assert info.st_gid == 199999 and stat.S_IMODE(info.st_mode) & 0o077 == 0o010, directory
    assert stat.S_IMODE((bundle / "pkg" / "mod.py").stat().st_mode) & 0o070 == 0o040
    assert stat.S_IMODE((bundle / "tool.sh").stat().st_mode) & 0o070 == 0o050
    assert stat.S_IMODE((bundle / "pkg").stat().st_mode) & 0o070 == 0o050
