"""`stratus serve --takeover`: ask the server running on a data dir to exec its next version
in place (gateway/takeover.py), and wait until that version serves."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from stratus.backends.orphans import LOCK_FILE
from stratus.cli.client import CliError
from stratus.gateway.takeover import REPORT

TAKEOVER_TIMEOUT_S = 300.0  # the next version's start: its imports on a cold page cache


def running_server(data_dir: Path) -> int:
    """The pid of the server holding ``data_dir``; a CliError if none does."""
    lock = data_dir / "run" / LOCK_FILE
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        raise CliError(f"no stratus server has run on {data_dir}: nothing to take over") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return int(os.pread(fd, 32, 0).decode().strip())
        raise CliError(f"no stratus server is running on {data_dir}: start one with "
                       "`stratus serve`")
    finally:
        os.close(fd)


def request_takeover(data_dir: Path, timeout_s: float = TAKEOVER_TIMEOUT_S) -> dict[str, Any]:
    """Signal the server on ``data_dir`` and return its next version's report once it serves.
    Importing this module (the server's wiring with it) already checked that the installed
    version imports: a broken install is refused before the running server is touched."""
    import stratus.server  # noqa: F401  # the version the server will exec into

    pid = running_server(data_dir)
    report = data_dir / "run" / REPORT
    before = _read(report)
    seen = before.get("generation", 0) if before.get("pid") == pid else 0
    os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = _read(report)
        if now.get("pid") == pid and now.get("generation", 0) > seen:
            return now
        if not _alive(pid):
            raise CliError(f"the server (pid {pid}) exited during the takeover; see "
                           f"{data_dir / 'logs'}")
    raise CliError(f"the server (pid {pid}) did not report the takeover within {timeout_s:g}s")


def _read(path: Path) -> dict[str, Any]:
    with contextlib.suppress(FileNotFoundError, ValueError):
        data = json.loads(path.read_text())
        if isinstance(data, dict):
            return data
    return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat", "rb") as stat:
        return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"  # a zombie is no server
    return True
