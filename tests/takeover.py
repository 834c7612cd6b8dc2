"""Load across a server takeover, for the takeover tests: an open-loop request rate on
keep-alive connections while `stratus serve --takeover` upgrades the server in place, and what
became of each request (status, whether it paid a cold start, which pid answered)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

from keepalive import Connections
from server import STRATUS, StratusServer


@dataclass
class Fate:
    status: int | None  # None: the client saw no HTTP answer at all
    cold: bool = False
    pid: int | None = None
    latency_s: float = 0.0


@dataclass
class Run:
    fates: list[Fate]
    takeover: subprocess.CompletedProcess[str]
    sent_in: float
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> list[Fate]:
        return [fate for fate in self.fates if fate.status != 200]

    @property
    def cold(self) -> list[Fate]:
        return [fate for fate in self.fates if fate.cold]

    def summary(self) -> str:
        slowest = max((fate.latency_s for fate in self.fates), default=0.0)
        return (f"{len(self.fates)} requests in {self.sent_in:.1f} s, {len(self.failed)} failed, "
                f"{len(self.cold)} cold starts, slowest {slowest * 1000:.0f} ms; takeover exit "
                f"{self.takeover.returncode}: {self.takeover.stderr.strip()}")


def take_over(server: StratusServer, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`stratus serve --takeover` on the server's data dir, as an operator runs it."""
    return subprocess.run([STRATUS, "serve", "--takeover", "--data-dir", str(server.data_dir)],
                          env=server.env, capture_output=True, text=True, timeout=timeout)


async def _one(client: Connections, name: str, body: bytes) -> Fate:
    started = time.monotonic()
    try:
        status, answer, content = await client.post(f"/api/deployments/{name}/invoke", body, {})
    except (OSError, asyncio.IncompleteReadError, ValueError):
        return Fate(None, latency_s=time.monotonic() - started)
    return Fate(status, answer.get("x-stratus-cold-start") == "true",
                json.loads(content).get("pid") if status == 200 else None,
                time.monotonic() - started)


async def _drive(server: StratusServer, name: str, rate: float, duration: float,
                 at: float) -> tuple[list[Fate], subprocess.CompletedProcess[str], float]:
    connections = Connections(server.port, server.key)
    start = time.monotonic()
    upgrade = asyncio.get_running_loop().run_in_executor(None, _delayed_takeover, server, at)
    calls: list[asyncio.Task[Fate]] = []
    body = json.dumps({"n": 1}).encode()
    for request_id in range(int(rate * duration)):
        # Open loop: each request leaves at its time, whatever became of the earlier ones.
        await asyncio.sleep(max(0.0, start + request_id / rate - time.monotonic()))
        calls.append(asyncio.create_task(_one(connections, name, body)))
    sent_in = time.monotonic() - start
    fates = await asyncio.gather(*calls)
    result = await upgrade
    connections.close()
    return list(fates), result, sent_in


def _delayed_takeover(server: StratusServer, at: float) -> subprocess.CompletedProcess[str]:
    time.sleep(at)
    return take_over(server)


def run_with_takeover(server: StratusServer, name: str, *, rate: float, duration: float,
                      at: float) -> Run:
    """Send ``rate`` requests a second for ``duration`` seconds; ``at`` seconds in, upgrade
    the server with `stratus serve --takeover`."""
    fates, result, sent_in = asyncio.run(_drive(server, name, rate, duration, at))
    report = json.loads((server.data_dir / "run" / "takeover.json").read_text()) \
        if result.returncode == 0 else {}
    return Run(fates, result, sent_in, report)
