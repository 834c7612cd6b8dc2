"""Handlers that look at their sandbox from inside, or try to break out of its limits."""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import signal
import socket
import time
from typing import Any

import stratus
from stratus.runtime import wire

# At import, in the revision zygote: who imports the user's code.
IMPORTED_AS = os.getuid()


def _limit(which: int) -> list[int]:
    soft, hard = resource.getrlimit(which)
    return [soft, hard]


class Inspect:
    """Reports what the replica sees: its user, directory, environment, limits, cgroups, and
    whether it can open the paths the request names."""

    def __init__(self, ctx: stratus.Context) -> None:
        self.ctx = ctx

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        with open("/proc/self/cgroup") as cgroups:
            cgroup = cgroups.read()
        probes = {}
        for path in request.get("probe", []):
            try:
                os.listdir(path) if os.path.isdir(path) else open(path, "rb").close()
                probes[path] = "ok"
            except OSError as exc:
                probes[path] = errno.errorcode.get(exc.errno or 0, str(exc))
        with open("scratch.txt", "w") as scratch:  # the working directory is writable
            scratch.write("mine")
        return {
            "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
            "imported_as": IMPORTED_AS, "pid": os.getpid(),
            "cwd": os.getcwd(), "cwd_mode": oct(os.stat(".").st_mode & 0o777),
            "sees_app": os.path.isfile("app.py"),
            "env": dict(os.environ),
            "rlimits": {name: _limit(getattr(resource, f"RLIMIT_{name}"))
                        for name in ("CORE", "NOFILE", "CPU", "AS", "NPROC")},
            "cgroup": cgroup,
            "probes": probes,
            "signal": _signal(request["signal"]) if "signal" in request else None,
            "signals": {str(number): _signal(request["signals"]["pid"], number)
                        for number in request["signals"]["numbers"]}
            if "signals" in request else None,
            "hello": _hello(request["socket"], request["hello"]) if "hello" in request else None,
        }


def _signal(pid: int, number: int = 0) -> str:
    try:
        os.kill(pid, number)
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc))
    return "ok"


def _hello(path: str, hello: list[Any]) -> str:
    """Connects to the server's socket and says hello as someone else: the server must hang
    up rather than take it (it would otherwise route that one's traffic here)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        return f"cannot connect: {errno.errorcode.get(exc.errno or 0, exc)}"
    with sock:
        sock.sendall(wire.encode(hello))
        sock.settimeout(3)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return "kept open"
        return "closed" if not data else "answered"


class Hog:
    """Allocates (and writes) ``mb`` megabytes in 16 MB pieces."""

    def __init__(self, ctx: stratus.Context) -> None:
        self.pid = os.getpid()

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("ping"):
            return {"pid": self.pid}
        if request.get("at_once"):
            block = b"\x01" * (int(request["mb"]) << 20)
            return {"held_mb": len(block) >> 20, "pid": self.pid}
        pieces = [b"\x01" * (16 << 20) for _ in range(int(request["mb"]) // 16)]
        return {"held_mb": 16 * len(pieces), "pid": self.pid}


class Spinner:
    """Burns CPU for up to ``seconds``."""

    def __init__(self, ctx: stratus.Context) -> None:
        self.pid = os.getpid()

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        deadline = time.process_time() + float(request.get("seconds", 0))
        while time.process_time() < deadline:
            pass
        return {"pid": self.pid, "cpu_s": time.process_time()}


def _leave_running() -> int:
    pid = os.fork()
    if pid == 0:
        os.setsid()  # out of the replica's process group, which the zygote kills with it
        time.sleep(60)
        os._exit(0)
    return pid


class Forker:
    """Forks up to ``attempts`` children that each sleep ``hold`` seconds, stops at the first
    refused fork, then kills and reaps them all. Never unbounded."""

    def __init__(self, ctx: stratus.Context) -> None:
        self.pid = os.getpid()

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("ping"):
            return {"pid": self.pid}
        if request.get("leave"):  # children in sessions of their own, left running for a minute
            return {"left": [_leave_running() for _ in range(int(request["leave"]))],
                    "pid": self.pid}
        attempts = min(int(request.get("attempts", 100)), 10_000)
        hold = float(request.get("hold", 5))
        children: list[int] = []
        refused = None
        for _ in range(attempts):
            try:
                pid = os.fork()
            except OSError as exc:
                refused = f"{type(exc).__name__}: {exc}"
                break
            if pid == 0:
                time.sleep(hold)
                os._exit(0)
            children.append(pid)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in children:
            os.waitpid(pid, 0)
        return {"forked": len(children), "refused": refused, "pid": self.pid}
