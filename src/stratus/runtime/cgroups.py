"""Per-replica cgroups on the server's side: a hard memory limit and a process limit for each
replica, made under the server's own cgroup on cgroup v2, or on v1's memory and pids
hierarchies, wherever this host lets the server create them.

Only the server (never the replica, which may be another user by then) writes a replica's
pid into its cgroup; the replica waits for that before it runs user code.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("stratus.sandbox")

CONTROLLERS = ("memory", "pids")
# The server's pid and start time; "-server": the leaf a v2 server moved itself into.
_PARENT = re.compile(r"stratus-srv-(\d+)-(\d+)(?:-server)?")
REMOVE_WAIT_S = 2.0  # how long a removal waits for the processes it killed to exit


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy that limits memory or processes, as this server sees it."""

    version: int  # 1 or 2
    controllers: frozenset[str]  # of CONTROLLERS, those this hierarchy carries
    field: str  # the controllers field of its /proc/self/cgroup line ("" on v2)
    path: str  # the server's cgroup in it, as /proc/self/cgroup names it
    directory: Path  # that cgroup's directory

    def entry(self, path: str) -> str:
        """How /proc/<pid>/cgroup names cgroup ``path`` of this hierarchy."""
        return f"{self.field}:{path}"


def current_cgroups(text: str) -> set[str]:
    """``controllers:path`` of each line of a /proc/<pid>/cgroup file, as ``entry`` names them."""
    return {line.split(":", 1)[1] for line in text.splitlines() if line.count(":") >= 2}


def parse_hierarchies(proc_cgroup: str, mountinfo: str) -> list[Hierarchy]:
    """The hierarchies that carry a memory or pids controller, from /proc/self/cgroup and
    /proc/self/mountinfo. A v2 hierarchy's controllers are read later, from its files."""
    mounts: list[tuple[str, str, str, set[str]]] = []  # root, mount point, type, options
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
            mounts.append((fields[3], _unescape(fields[4]), tail[0], set(tail[2].split(","))))
    found: list[Hierarchy] = []
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        ident, names, path = parts
        wanted = frozenset(set(names.split(",")) & set(CONTROLLERS))
        for root, point, kind, options in mounts:
            if ident == "0" and kind == "cgroup2":
                hierarchy = Hierarchy(2, frozenset(CONTROLLERS), "", path, _join(point, root, path))
            elif ident != "0" and kind == "cgroup" and wanted and wanted <= options:
                hierarchy = Hierarchy(1, wanted, names, path, _join(point, root, path))
            else:
                continue
            found.append(hierarchy)
            break
    return found


def _unescape(path: str) -> str:
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")


def _join(mount_point: str, mount_root: str, path: str) -> Path:
    """The directory of cgroup ``path``: the mount shows the hierarchy from ``mount_root``."""
    if mount_root != "/" and (path == mount_root or path.startswith(mount_root + "/")):
        path = path[len(mount_root):]
    return Path(mount_point) / path.lstrip("/")


def _read(path: Path) -> str:
    with open(path) as handle:
        return handle.read()


def _write(path: Path, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def _counter(text: str, key: str) -> int:
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0


@dataclass(frozen=True)
class ReplicaCgroup:
    name: str
    directories: tuple[Path, ...]
    expected: tuple[str, ...]  # the replica's /proc/self/cgroup entries once it is placed
    memory: Path | None  # the directory whose files report OOM kills
    version: int


class Cgroups:
    """The cgroups of this server's replicas: ``<own cgroup>/stratus-<pid>/<replica>`` in each
    hierarchy that carries memory or pids."""

    def __init__(self, hierarchies: list[Hierarchy], pid: int | None = None) -> None:
        self.hierarchies = hierarchies
        pid = pid or os.getpid()
        # Named after the server's process (pid and start time), so that another server can
        # tell whether it is still running before it removes what it left.
        self.parent = f"stratus-srv-{pid}-{_start_time(pid)}"
        self.leftovers: list[Path] = []  # replica cgroups that were still busy when removed
        self._leftovers_lock = threading.Lock()  # removals may run on worker threads

    @property
    def controllers(self) -> frozenset[str]:
        return frozenset().union(*(h.controllers for h in self.hierarchies))

    @classmethod
    def detect(cls) -> tuple[Cgroups | None, str]:
        """This host's cgroups, opened, or None and why they cannot be used."""
        try:
            hierarchies = parse_hierarchies(_read(Path("/proc/self/cgroup")),
                                            _read(Path("/proc/self/mountinfo")))
        except OSError as exc:
            return None, f"cannot read the process's cgroups: {exc}"
        v1 = [h for h in hierarchies if h.version == 1]
        v2 = [h for h in hierarchies if h.version == 2]
        reasons = []
        for candidate in (v2, v1):
            if not candidate:
                continue
            cgroups = cls(candidate)
            try:
                cgroups.open()
            except OSError as exc:
                reasons.append(f"cgroup v{candidate[0].version}: {exc}")
                continue
            if "memory" in cgroups.controllers:
                return cgroups, ""
            cgroups.close()
            reasons.append(f"cgroup v{candidate[0].version}: no memory controller here")
        return None, "; ".join(reasons) or "no cgroup hierarchy with a memory controller"

    # -- the server's parent cgroup -------------------------------------------------------
    def open(self) -> None:
        """Make the parent cgroups, removing those that servers no longer running left."""
        usable = []
        for hierarchy in self.hierarchies:
            if hierarchy.version == 2:
                hierarchy = self._open_v2(hierarchy)
            _remove_stale(hierarchy.directory)
            parent = hierarchy.directory / self.parent
            with contextlib.suppress(FileExistsError):
                parent.mkdir()
            if hierarchy.version == 2:
                enabled = " ".join(f"+{name}" for name in sorted(hierarchy.controllers))
                _write(parent / "cgroup.subtree_control", enabled)
            usable.append(hierarchy)
        self.hierarchies = usable

    def _open_v2(self, hierarchy: Hierarchy) -> Hierarchy:
        """On v2 a cgroup with processes cannot hand controllers to its children (except the
        root). A server alone in its cgroup (a systemd unit with Delegate=yes) moves into a
        leaf of it first; one that shares its cgroup with others cannot use v2."""
        directory = hierarchy.directory
        available = set(_read(directory / "cgroup.controllers").split()) & set(CONTROLLERS)
        if "memory" not in available:
            raise OSError(errno.ENOTSUP, f"no memory controller in {directory}")
        enabled = set(_read(directory / "cgroup.subtree_control").split())
        missing = sorted(available - enabled)
        if missing:
            change = " ".join(f"+{name}" for name in missing)
            try:
                _write(directory / "cgroup.subtree_control", change)
            except OSError as exc:
                if exc.errno != errno.EBUSY or hierarchy.path == "/":
                    raise
                self._move_into_leaf(directory)
                _write(directory / "cgroup.subtree_control", change)
        return Hierarchy(2, frozenset(available), "", hierarchy.path, directory)

    def _move_into_leaf(self, directory: Path) -> None:
        others = {int(pid) for pid in _read(directory / "cgroup.procs").split()} - {os.getpid()}
        if others:
            raise OSError(errno.EBUSY, f"{directory} also holds other processes "
                                       f"({len(others)}); run the server in its own cgroup")
        leaf = directory / f"{self.parent}-server"
        with contextlib.suppress(FileExistsError):
            leaf.mkdir()
        _write(leaf / "cgroup.procs", str(os.getpid()))

    def close(self, wait: float = REMOVE_WAIT_S) -> None:
        """Kill what still runs in the replicas' cgroups and remove them all, waiting up to
        ``wait`` seconds in all for the killed processes to exit."""
        deadline = time.monotonic() + wait
        parents = [hierarchy.directory / self.parent for hierarchy in self.hierarchies]
        for child in (child for parent in parents for child in _children(parent)):
            with contextlib.suppress(OSError):  # all at once, so that they exit together
                _kill(child)
        for parent in parents:
            for child in _children(parent):
                _kill_and_remove(child, deadline - time.monotonic())
            with contextlib.suppress(OSError):
                parent.rmdir()

    # -- one replica's cgroup --------------------------------------------------------------
    def create(self, name: str, memory_bytes: int | None, pids: int) -> ReplicaCgroup:
        self._retry_leftovers()
        directories: list[Path] = []
        expected: list[str] = []
        memory: Path | None = None
        try:
            for hierarchy in self.hierarchies:
                directory = hierarchy.directory / self.parent / name
                directory.mkdir()
                directories.append(directory)
                expected.append(hierarchy.entry(f"{hierarchy.path.rstrip('/')}/{self.parent}/{name}"))
                if "memory" in hierarchy.controllers:
                    memory = directory
                    if memory_bytes:
                        _limit_memory(directory, hierarchy.version, memory_bytes)
                if "pids" in hierarchy.controllers:
                    _write(directory / "pids.max", str(pids))
        except OSError:
            for directory in directories:
                with contextlib.suppress(OSError):
                    directory.rmdir()
            raise
        version = self.hierarchies[0].version if self.hierarchies else 2
        return ReplicaCgroup(name, tuple(directories), tuple(expected), memory, version)

    def place(self, cgroup: ReplicaCgroup, pid: int) -> None:
        for directory in cgroup.directories:
            _write(directory / "cgroup.procs", str(pid))

    def oom_killed(self, cgroup: ReplicaCgroup) -> bool:
        """Whether the kernel killed a process of the replica for going over its limit."""
        if cgroup.memory is None:
            return False
        try:
            if cgroup.version == 2:
                return _counter(_read(cgroup.memory / "memory.events"), "oom_kill") > 0
            control = _read(cgroup.memory / "memory.oom_control")
            if "oom_kill " in control:
                return _counter(control, "oom_kill") > 0
            return int(_read(cgroup.memory / "memory.failcnt")) > 0  # kernels before 4.13
        except (OSError, ValueError):
            return False

    def remove(self, cgroup: ReplicaCgroup, wait: float = REMOVE_WAIT_S) -> bool:
        """Kill what the replica left running (its children), then remove its cgroups, waiting
        up to ``wait`` seconds for those processes to exit. Whether all are gone: one still
        busy is retried with the next replica's cgroup, and at close."""
        busy = [d for d in cgroup.directories if not _kill_and_remove(d, wait)]
        if busy:
            with self._leftovers_lock:
                self.leftovers += [d for d in busy if d not in self.leftovers]
        return not busy

    def _retry_leftovers(self) -> None:
        with self._leftovers_lock:
            self.leftovers = [d for d in self.leftovers if not _kill_and_remove(d)]


def _limit_memory(directory: Path, version: int, limit: int) -> None:
    if version == 2:
        _write(directory / "memory.max", str(limit))
        for name, value in (("memory.swap.max", "0"), ("memory.oom.group", "1")):
            with contextlib.suppress(FileNotFoundError):
                _write(directory / name, value)
        return
    _write(directory / "memory.limit_in_bytes", str(limit))
    with contextlib.suppress(OSError):  # only with swap accounting; must come second
        _write(directory / "memory.memsw.limit_in_bytes", str(limit))


def _children(directory: Path) -> list[Path]:
    try:
        return [entry for entry in directory.iterdir() if entry.is_dir()]
    except OSError:
        return []


def _kill(directory: Path) -> None:
    kill_all = directory / "cgroup.kill"  # v2, Linux 5.14 and later
    if kill_all.exists():
        _write(kill_all, "1")
        return
    for pid in _read(directory / "cgroup.procs").split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


def _kill_and_remove(directory: Path, wait: float = 0.0) -> bool:
    """True once ``directory`` is gone. A killed process takes a moment to exit, and until it
    has the kernel will not remove its cgroup (EBUSY): retry for up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    delay = 0.0005
    while True:
        try:
            _kill(directory)  # again each time: on v1 a process may have forked meanwhile
            directory.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                return False
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def _start_time(pid: int) -> int:
    """When the process started, in clock ticks since boot; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return int(stat.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return 0


def _remove_stale(directory: Path, wait: float = REMOVE_WAIT_S) -> None:
    """The cgroups that servers which are no longer running left (a kill -9 of one, say):
    what still runs in them is an orphan of that server (a replica stuck in a system call, a
    process a handler started in a session of its own), killed before they are removed."""
    deadline = time.monotonic() + wait
    for entry in _children(directory):
        match = _PARENT.fullmatch(entry.name)
        if match is None or _start_time(int(match[1])) == int(match[2]):
            continue
        children = _children(entry)
        for child in children:
            with contextlib.suppress(OSError):  # all at once, so that they exit together
                _kill(child)
        for child in children:
            if not _kill_and_remove(child, deadline - time.monotonic()):
                log.warning("cannot remove the stale cgroup %s: still busy", child)
        if _kill_and_remove(entry, deadline - time.monotonic()):  # its "-server" leaf too
            log.info("removed the stale cgroup %s", entry)
