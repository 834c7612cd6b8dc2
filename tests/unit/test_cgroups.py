"""Per-replica cgroups: finding the hierarchies, the files a replica's limits go in, and (where
this host lets the tests make cgroups) a real replica-like child over its memory limit."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from stratus.runtime.cgroups import Cgroups, Hierarchy, current_cgroups, parse_hierarchies
from stratus.runtime.sandbox import MB

HYBRID_CGROUP = """9:name=systemd:/
8:pids:/
4:memory:/jobs/abc
2:cpu,cpuacct:/
0::/
"""
HYBRID_MOUNTS = """30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
32 30 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
33 30 0:29 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
34 30 0:30 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
"""


def test_hybrid_host_has_v1_memory_and_pids_and_a_v2_tree() -> None:
    found = {(h.version, "".join(sorted(h.controllers)) if h.version == 1 else "v2"): h
             for h in parse_hierarchies(HYBRID_CGROUP, HYBRID_MOUNTS)}
    memory = found[(1, "memory")]
    assert memory.directory == Path("/sys/fs/cgroup/memory/jobs/abc")
    assert memory.entry("/jobs/abc/r1") == "memory:/jobs/abc/r1"
    assert found[(1, "pids")].directory == Path("/sys/fs/cgroup/pids")
    assert found[(2, "v2")].directory == Path("/sys/fs/cgroup/unified")
    assert len(found) == 3  # cpu and name=systemd limit nothing of ours


def test_v2_host_and_a_container_mount_root() -> None:
    mounts = "40 30 0:40 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n"
    (hierarchy,) = parse_hierarchies("0::/kubepods/pod1/app\n", mounts)
    assert hierarchy.version == 2
    assert hierarchy.directory == Path("/sys/fs/cgroup/app")  # the mount shows it from its root
    assert hierarchy.entry("/kubepods/pod1/app/r") == ":/kubepods/pod1/app/r"


def _fake_v2(root: Path) -> Cgroups:
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    (root / "cgroup.subtree_control").write_text("memory pids\n")
    (root / "cgroup.procs").write_text(f"{os.getpid()}\n")
    cgroups = Cgroups([Hierarchy(2, frozenset({"memory", "pids"}), "", "/app", root)], pid=42)
    cgroups.open()
    return cgroups


def test_a_replica_cgroup_on_v2_gets_its_limits(tmp_path: Path) -> None:
    cgroups = _fake_v2(tmp_path / "app")
    parent = tmp_path / "app" / cgroups.parent
    assert (parent / "cgroup.subtree_control").read_text() == "+memory +pids"
    cgroup = cgroups.create("r1", 320 * MB, 64)
    directory = parent / "r1"
    assert cgroup.directories == (directory,)
    assert cgroup.expected == (f":/app/{cgroups.parent}/r1",)
    assert (directory / "memory.max").read_text() == str(320 * MB)
    assert (directory / "memory.swap.max").read_text() == "0"
    assert (directory / "memory.oom.group").read_text() == "1"
    assert (directory / "pids.max").read_text() == "64"
    (directory / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n")
    assert not cgroups.oom_killed(cgroup)
    (directory / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\n")
    assert cgroups.oom_killed(cgroup)
    no_memory_limit = cgroups.create("r2", None, 64)
    assert not (no_memory_limit.directories[0] / "memory.max").exists()


def test_v2_without_a_memory_controller_is_not_used(tmp_path: Path) -> None:
    root = tmp_path / "app"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu io\n")
    (root / "cgroup.subtree_control").write_text("")
    cgroups = Cgroups([Hierarchy(2, frozenset({"memory", "pids"}), "", "/app", root)])
    with pytest.raises(OSError, match="no memory controller"):
        cgroups.open()


@pytest.fixture
def host_cgroups() -> Cgroups:
    cgroups, reason = Cgroups.detect()
    if cgroups is None:
        pytest.skip(f"this host gives the tests no cgroups: {reason}")
    return cgroups


def test_a_real_child_over_its_memory_limit_is_killed_alone(host_cgroups: Cgroups) -> None:
    cgroup = host_cgroups.create(f"unit-{os.getpid()}", 64 * MB, 32)
    try:
        pid = os.fork()
        if pid == 0:  # waits until placed, as a replica does, then allocates far too much
            deadline = time.monotonic() + 5
            while not set(cgroup.expected) <= current_cgroups(Path("/proc/self/cgroup").read_text()):
                if time.monotonic() > deadline:
                    os._exit(3)
                time.sleep(0.001)
            hog = [b"\x01" * (16 * MB) for _ in range(32)]
            os._exit(len(hog))
        host_cgroups.place(cgroup, pid)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == -9
        assert host_cgroups.oom_killed(cgroup)
    finally:
        host_cgroups.remove(cgroup)
        host_cgroups.close()
    assert not any(directory.exists() for directory in cgroup.directories)


@pytest.mark.parametrize("ending", ["remove", "close"])
def test_what_a_replica_left_running_is_killed_and_its_cgroup_removed(
        host_cgroups: Cgroups, ending: str) -> None:
    """The kernel removes a cgroup only once the processes just killed in it have exited: a
    removal (the replica ended) and a close (the server stops) wait for that."""
    cgroup = host_cgroups.create(f"left-{ending}-{os.getpid()}", 64 * MB, 32)
    ready, told = os.pipe()
    try:
        pid = os.fork()
        if pid == 0:  # placed, it forks a child that keeps running, and ends (or waits)
            deadline = time.monotonic() + 5
            while not set(cgroup.expected) <= current_cgroups(Path("/proc/self/cgroup").read_text()):
                if time.monotonic() > deadline:
                    os._exit(3)
                time.sleep(0.001)
            if os.fork() == 0:
                time.sleep(60)
                os._exit(0)
            os.write(told, b"1")
            if ending == "close":
                time.sleep(60)
            os._exit(0)
        os.close(told)
        host_cgroups.place(cgroup, pid)
        assert os.read(ready, 1) == b"1"
        if ending == "remove":
            assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
            host_cgroups.remove(cgroup)
            assert not any(d.exists() for d in cgroup.directories), "still busy: not removed"
            assert not host_cgroups.leftovers
    finally:
        os.close(ready)
        host_cgroups.close()
    if ending == "close":
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == -9
    assert not any(d.exists() for d in cgroup.directories)
    assert not any((h.directory / host_cgroups.parent).exists() for h in host_cgroups.hierarchies)
