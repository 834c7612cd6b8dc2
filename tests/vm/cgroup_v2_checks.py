"""runtime/cgroups.py's cgroup v2 paths against the running kernel, run as root in a guest that
has cgroup v2 alone (tests/vm/guest.py); prints one JSON line per check for the host's test.

Not a pytest file: pytest and its plugins take minutes to start in an emulated guest.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stratus.runtime.cgroups import Cgroups, ReplicaCgroup, current_cgroups

MB = 1 << 20
ROOT = Path("/sys/fs/cgroup")
PR_SET_CHILD_SUBREAPER = 36
RESULT = "stratus-check "  # the prefix of each result line


def spawn(cgroups: Cgroups, cgroup: ReplicaCgroup, body: Callable[[], int]) -> int:
    """A child that, as a replica does, waits until the parent has placed it, then runs
    ``body`` and exits with what it returns (3: never placed)."""
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if set(cgroup.expected) <= current_cgroups(Path("/proc/self/cgroup").read_text()):
                    code = body()
                    break
                time.sleep(0.001)
        finally:
            os._exit(code)
    cgroups.place(cgroup, pid)
    return pid


def exit_code(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def read(path: Path) -> str:
    return path.read_text().strip()


def events(cgroup: ReplicaCgroup) -> dict[str, int]:
    assert cgroup.memory is not None
    pairs = (line.split() for line in read(cgroup.memory / "memory.events").splitlines())
    return {name: int(value) for name, value in pairs}


def removed(cgroups: Cgroups, cgroup: ReplicaCgroup) -> None:
    cgroups.remove(cgroup)
    left = [str(d) for d in cgroup.directories if d.exists()]
    assert not left and not cgroups.leftovers, (left, cgroups.leftovers)


# -- the checks ------------------------------------------------------------------------------
def check_detect(cgroups: Cgroups) -> str:
    (hierarchy,) = cgroups.hierarchies
    assert (hierarchy.version, hierarchy.path, hierarchy.directory) == (2, "/", ROOT), hierarchy
    assert hierarchy.controllers == {"memory", "pids"}, hierarchy.controllers
    parent = ROOT / cgroups.parent
    assert set(read(ROOT / "cgroup.subtree_control").split()) >= {"memory", "pids"}
    assert read(parent / "cgroup.subtree_control").split() == ["memory", "pids"]
    assert not (ROOT / STALE).exists(), "a dead server's cgroup was left"
    return f"{parent}, controllers {read(parent / 'cgroup.subtree_control')}"


def check_limits(cgroups: Cgroups) -> str:
    cgroup = cgroups.create("limits", 48 * MB, 16)
    (directory,) = cgroup.directories
    written = {name: read(directory / name) for name in
               ("memory.max", "memory.swap.max", "memory.oom.group", "pids.max")}
    assert written == {"memory.max": str(48 * MB), "memory.swap.max": "0",
                       "memory.oom.group": "1", "pids.max": "16"}, written
    pid = spawn(cgroups, cgroup, lambda: 0)
    assert exit_code(pid) == 0, "the child never saw itself placed"
    assert not cgroups.oom_killed(cgroup)
    removed(cgroups, cgroup)
    return f"{cgroup.expected[0]}: {written}"


def check_out_of_memory(cgroups: Cgroups) -> str:
    cgroup = cgroups.create("hog", 48 * MB, 16)

    def hog() -> int:
        held = [b"\x01" * (8 * MB) for _ in range(64)]  # 512 MB, past memory.max
        return len(held) and 0

    code = exit_code(spawn(cgroups, cgroup, hog))
    seen = events(cgroup)
    assert code == -signal.SIGKILL, f"the hog ended with {code}, not SIGKILL"
    assert cgroups.oom_killed(cgroup), seen
    assert seen["oom_kill"] >= 1 and seen["max"] >= 1, seen
    removed(cgroups, cgroup)
    return f"killed by SIGKILL; memory.events {seen}"


def check_crash_is_not_out_of_memory(cgroups: Cgroups) -> str:
    found = []
    for how in ("sigkill", "abort"):
        cgroup = cgroups.create(f"crash-{how}", 48 * MB, 16)
        ready, told = os.pipe()

        def crash(how: str = how, told: int = told) -> int:
            held = b"\x01" * (16 * MB)  # some memory in use, well under the limit
            os.write(told, b"1")
            if how == "abort":
                os.abort()
            time.sleep(30)
            return len(held) and 0

        pid = spawn(cgroups, cgroup, crash)
        os.close(told)
        assert os.read(ready, 1) == b"1", "the child never got going"
        os.close(ready)
        if how == "sigkill":
            os.kill(pid, signal.SIGKILL)
        code = exit_code(pid)
        expected = -signal.SIGKILL if how == "sigkill" else -signal.SIGABRT
        assert code == expected, (how, code)
        assert not cgroups.oom_killed(cgroup), (how, events(cgroup))
        found.append(f"{how}: exit {code}, oom_kill {events(cgroup)['oom_kill']}")
        removed(cgroups, cgroup)
    return "; ".join(found)


def check_pids_max(cgroups: Cgroups) -> str:
    """Forks past pids.max fail with EAGAIN; the children left running when the replica
    ends are killed and the cgroup removed."""
    cgroup = cgroups.create("forks", None, 8)
    ready, told = os.pipe()

    def fork_many() -> int:
        children, refused = [], 0
        for _ in range(20):
            try:
                child = os.fork()
            except OSError as exc:
                refused = exc.errno or 0
                break
            if child == 0:
                time.sleep(60)
                os._exit(0)
            children.append(child)
        os.write(told, json.dumps({"children": children, "errno": refused}).encode())
        return 0  # and leaves its children running, for the cleanup to find

    pid = spawn(cgroups, cgroup, fork_many)
    os.close(told)
    report = json.loads(os.read(ready, 65536))
    os.close(ready)
    assert exit_code(pid) == 0
    children = report["children"]
    assert report["errno"] == errno.EAGAIN, report
    assert len(children) == 7, report  # pids.max counts the forking process too
    assert read(cgroup.directories[0] / "pids.current") == "7"
    removed(cgroups, cgroup)
    ends = {exit_code(child) for child in children}  # this process is their subreaper
    assert ends == {-signal.SIGKILL}, ends
    return f"{len(children)} forks, then {errno.errorcode[report['errno']]}; children killed"


def check_close_with_a_replica_running(cgroups: Cgroups) -> str:
    """A server that stops while a replica (and what it forked) still runs leaves nothing."""
    cgroup = cgroups.create("running", 48 * MB, 16)
    ready, told = os.pipe()

    def linger() -> int:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        os.write(told, b"1")
        time.sleep(60)
        return 0

    pid = spawn(cgroups, cgroup, linger)
    os.close(told)
    assert os.read(ready, 1) == b"1"
    os.close(ready)
    cgroups.close()
    assert exit_code(pid) == -signal.SIGKILL
    parent = ROOT / cgroups.parent
    assert not parent.exists(), sorted(p.name for p in parent.iterdir() if p.is_dir())
    return f"{parent} removed"


def check_delegated(_: Cgroups) -> str:
    """A server alone in a cgroup of its own moves into a leaf of it to hand controllers down;
    one that shares its cgroup with another process cannot use v2."""
    alone = run_in_cgroup(ROOT / "delegated")
    server = f"/delegated/{alone['parent']}-server"
    assert alone["detected"] == "", alone
    assert alone["own"] == f"0::{server}", alone
    assert alone["replica"] == f":/delegated/{alone['parent']}/r", alone
    assert alone["memory.max"] == str(32 * MB), alone
    assert alone["left"] == [f"{alone['parent']}-server"], alone
    shared = run_in_cgroup(ROOT / "shared", neighbour=True)
    assert "also holds other processes (1)" in shared["detected"], shared
    return f"alone: moved to {server}; shared: {shared['detected']}"


def run_in_cgroup(directory: Path, neighbour: bool = False) -> dict[str, Any]:
    """What a server forked into ``directory`` (with a neighbour process, or alone) makes of
    it (``as_server``)."""
    directory.mkdir()
    pids = []
    if neighbour:
        pids.append(os.fork())
        if pids[-1] == 0:
            time.sleep(60)
            os._exit(0)
    go, started = os.pipe()
    answer, told = os.pipe()
    pids.append(os.fork())
    if pids[-1] == 0:
        code = 1
        try:
            os.read(go, 1)  # placed
            os.write(told, json.dumps(as_server()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(go)
    os.close(told)  # so that the read below ends if the child dies before it answers
    for pid in pids:
        (directory / "cgroup.procs").write_text(str(pid))
    os.write(started, b"1")
    found: dict[str, Any] = json.loads(os.read(answer, 65536) or b"{}")
    os.close(started)
    os.close(answer)
    if neighbour:
        os.kill(pids[0], signal.SIGKILL)
    assert [exit_code(pid) for pid in pids][-1] == 0, found
    for leaf in directory.iterdir():
        if leaf.is_dir():
            leaf.rmdir()
    directory.rmdir()
    return found


def as_server() -> dict[str, Any]:
    """The server's side, in a cgroup the checks made for it: detect, one replica, close."""
    cgroups, reason = Cgroups.detect()
    found: dict[str, Any] = {"detected": reason}
    if cgroups is not None:
        cgroup = cgroups.create("r", 32 * MB, 8)
        found.update(parent=cgroups.parent, replica=cgroup.expected[0],
                     own=read(Path("/proc/self/cgroup")),
                     **{"memory.max": read(cgroup.directories[0] / "memory.max")})
        cgroups.close()
        top = cgroups.hierarchies[0].directory
        found["left"] = sorted(p.name for p in top.iterdir() if p.is_dir())
    return found


STALE = "stratus-srv-999999-12345"  # a server that no longer runs left this
CHECKS = [check_detect, check_limits, check_out_of_memory, check_crash_is_not_out_of_memory,
          check_pids_max, check_close_with_a_replica_running, check_delegated]


def main() -> int:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    (ROOT / STALE / "r").mkdir(parents=True)
    cgroups, reason = Cgroups.detect()
    if cgroups is None:
        print(RESULT + json.dumps({"check": "check_detect", "ok": False, "detail": reason}))
        return 1
    failed = 0
    for check in CHECKS:
        started = time.monotonic()
        try:
            detail, ok = check(cgroups), True
        except Exception:
            detail, ok = traceback.format_exc(), False
            failed += 1
        print(RESULT + json.dumps({"check": check.__name__, "ok": ok, "detail": detail,
                                   "seconds": round(time.monotonic() - started, 2)}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
