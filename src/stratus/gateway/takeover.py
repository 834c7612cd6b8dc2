"""A takeover (an upgrade in place): the server execs its next version in the same process,
handing on its listening socket, its clients' idle connections and its running replicas,
so that an upgrade drops no request and starts no replica cold.

The process stays the same (its pid, its children, the cgroups named after it), as
HAProxy's master re-executes itself on a reload: a supervisor (systemd's main pid) sees no
change, and no second server ever holds the data dir. What is handed on crosses the exec as
inherited descriptors, listed in one environment variable the next version reads and drops.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("stratus.server")

ENV = "STRATUS_TAKEOVER"
REPORT = "takeover.json"  # in the run dir: what the last takeover did, for `serve --takeover`


@dataclass
class Takeover:
    began: float  # wall time the old version stopped accepting
    generation: int = 1  # how many takeovers this process has been through
    listen_fds: list[int] = field(default_factory=list)  # the listening sockets
    lock_fd: int = -1  # the data dir's lock, held across the exec
    connections: list[int] = field(default_factory=list)  # clients' idle keep-alive connections
    backend: dict[str, Any] = field(default_factory=dict)  # backends.handover.BackendHandover

    def take(self, transport: asyncio.Transport) -> None:
        """An idle client connection goes on: whatever the client sends next waits in the
        socket for the next version, which reads it as if nothing happened."""
        transport.pause_reading()
        self.connections.append(inheritable(transport.get_extra_info("socket").fileno()))
        transport.close()  # the duplicate keeps the socket open: the client sees no close

    def exec_next(self) -> None:
        """Replace this process with the next version, started as this one was."""
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.environ[ENV] = json.dumps(asdict(self))
        argv = [sys.executable, *sys.orig_argv[1:]]
        os.execv(sys.executable, argv)

    def report(self, run_dir: Path, replicas: int) -> float:
        """Say, in the run dir, that this version took over; return how long nothing was
        accepted (the old version's stop, the exec and this version's start)."""
        paused = time.time() - self.began
        path = run_dir / REPORT
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps({
            "pid": os.getpid(), "generation": self.generation, "paused_s": round(paused, 4),
            "replicas": replicas, "connections": len(self.connections)}))
        temporary.replace(path)
        return paused


def listeners(takeover: Takeover | None) -> list[socket.socket] | None:
    """The listening sockets a takeover handed on, for uvicorn to serve on; None: bind anew."""
    return None if takeover is None else [socket.socket(fileno=fd) for fd in takeover.listen_fds]


def inherited() -> Takeover | None:
    """What the version before this one's exec handed on, if this process is a takeover."""
    raw = os.environ.pop(ENV, None)  # not for the zygotes this version starts
    if not raw:
        return None
    data = json.loads(raw)
    data["generation"] = int(data.get("generation", 0)) + 1
    return Takeover(**data)


def inheritable(fd: int) -> int:
    """A duplicate of ``fd`` that survives the exec."""
    duplicate = os.dup(fd)
    os.set_inheritable(duplicate, True)
    return duplicate
