"""What a server that died without stopping (kill -9, a crash) left on this host: zygotes,
replicas and job workers still dialling its socket. A new server on the same data dir kills
them before it opens the socket again (the cgroups such a server left are reaped with
``runtime.cgroups``).

They are found by their command line, which names the socket they dial: each is a fork of
a zygote started as ``python -m stratus.runtime.zygote --socket <run dir>/stratus.sock``, and
that socket belongs to one data dir. No pid file is read, so a full disk or a pid reused by
another program cannot misdirect the kill.

Only a dead server's are reaped: each server holds its data dir (``claim``), so a second one
started there by mistake refuses to start instead of killing the first one's replicas.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import time
from pathlib import Path

log = logging.getLogger("stratus.backend")

ZYGOTE_MODULE = b"stratus.runtime.zygote"
EXIT_WAIT_S = 2.0  # for the killed processes to be gone before their socket is reopened


def dialling(socket_path: str, proc: Path = Path("/proc")) -> list[int]:
    """The pids of the zygotes and their forks whose command line names ``socket_path``."""
    wanted = [b"--socket", os.fsencode(socket_path)]
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if ZYGOTE_MODULE in argv and _follows(argv, wanted):
            found.append(int(entry.name))
    return sorted(found)


def _follows(argv: list[bytes], wanted: list[bytes]) -> bool:
    return any(argv[index:index + len(wanted)] == wanted for index in range(len(argv)))


def reap(socket_path: str, wait: float = EXIT_WAIT_S) -> list[int]:
    """Kill (SIGKILL) what a previous server on this socket left, and their process groups
    when they lead one (a job worker's data loaders), then remove the socket; the pids killed."""
    orphans = dialling(socket_path)
    for pid in orphans:
        with contextlib.suppress(OSError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + wait
    while orphans and time.monotonic() < deadline and any(_alive(pid) for pid in orphans):
        time.sleep(0.01)
    if orphans:
        log.warning("killed %d processes a previous server on %s left running: %s",
                    len(orphans), socket_path, orphans)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)
    return orphans


def _alive(pid: int) -> bool:
    """Still running: neither gone nor a zombie (which its new parent, init, reaps)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


LOCK_FILE = "server.lock"


class DataDirInUse(ValueError):
    """Another live server holds the data dir."""


def claim(data_dir: Path, held: int | None = None) -> int:
    """Hold ``data_dir`` for this process: an exclusive ``flock`` on ``run/server.lock``, which
    the kernel releases when the process ends, however it ends (kill -9 included), so a lock
    found held means a live server. Returns the descriptor to close when the server stops.
    ``held``: the descriptor a takeover's exec kept open, whose lock this process holds."""
    run_dir = data_dir / "run"
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = held if held is not None and held >= 0 else \
        os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    os.set_inheritable(fd, False)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise DataDirInUse(f"another stratus server (pid {holder}) is serving the data dir "
                           f"{data_dir}; stop it first, or give this one another --data-dir"
                           ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
