"""Load under kill -9, for the retry tests: an open-loop request rate against a deployment of
``apps/retries`` while a random ready replica is killed every few seconds, and what became of
each request, set against the markers the handler left (which requests reached which pid)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from keepalive import Connections
from server import StratusServer, searchable_above


@dataclass
class Fate:
    """One request's end: its status (None when the client saw no HTTP answer at all), the
    attempts the server says it made, the pid that answered, the error body."""

    id: int
    status: int | None
    attempts: int
    pid: int | None = None
    error: dict[str, Any] | None = None


@dataclass
class Run:
    fates: list[Fate]
    killed: list[int]
    sent_in: float  # seconds from the first request sent to the last: the rate achieved
    started: dict[int, set[int]] = field(default_factory=dict)  # pid -> ids its handler took

    @property
    def failed(self) -> list[Fate]:
        return [fate for fate in self.fates if fate.status != 200]

    @property
    def retried(self) -> list[Fate]:
        return [fate for fate in self.fates if fate.attempts > 1]

    def reached_killed(self) -> set[int]:
        """Requests a killed replica's handler took and never answered: those are the
        requests a kill may fail when the deployment is not idempotent."""
        answered = {fate.id for fate in self.fates if fate.pid in self.killed}
        took = set().union(*(self.started.get(pid, set()) for pid in self.killed))
        return took - answered

    def summary(self) -> str:
        return (f"{len(self.fates)} requests in {self.sent_in:.1f} s, {len(self.failed)} failed, "
                f"{len(self.retried)} retried, {len(self.killed)} replicas killed, "
                f"{len(self.reached_killed())} reached a killed handler")


def marker_dir(path: Path) -> Path:
    path.mkdir()
    path.chmod(0o777)  # replicas run as their namespace's user
    searchable_above(path)
    return path


def read_markers(markers: Path) -> dict[int, set[int]]:
    started: dict[int, set[int]] = defaultdict(set)
    for file in markers.iterdir():
        started[int(file.name)].update(int(line) for line in file.read_text().split())
    return dict(started)


async def _one(client: Connections, name: str, request_id: int, sleep: float,
               headers: dict[str, str]) -> Fate:
    body = json.dumps({"id": request_id, "sleep": sleep}).encode()
    try:
        status, answer, content = await client.post(f"/api/deployments/{name}/invoke", body,
                                                    headers)
    except (OSError, asyncio.IncompleteReadError, ValueError):
        return Fate(request_id, None, 0)
    attempts = int(answer.get("x-stratus-attempts", "0"))
    if status == 200:
        return Fate(request_id, 200, attempts, pid=json.loads(content)["pid"])
    return Fate(request_id, status, attempts, error=json.loads(content)["error"])


async def _killer(server: StratusServer, client: httpx.AsyncClient, name: str, every: float,
                  until: float, killed: list[int], rng: random.Random) -> None:
    while True:
        await asyncio.sleep(every)
        if time.monotonic() >= until:
            return
        view = (await client.get(f"/api/deployments/{name}")).json()
        pids = [item["pid"] for item in view["replicas"]["items"]
                if item["state"] == "ready" and item["pid"] not in killed]
        if pids:
            victim = rng.choice(pids)
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)


async def _drive(server: StratusServer, name: str, rate: float, duration: float, every: float,
                 sleep: float, idempotency_keys: bool,
                 seed: int) -> tuple[list[Fate], list[int], float]:
    connections = Connections(server.port, server.key)
    async with httpx.AsyncClient(base_url=server.url, timeout=120,
                                 headers={"authorization": f"Bearer {server.key}"}) as client:
        start = time.monotonic()
        killed: list[int] = []
        killer = asyncio.create_task(_killer(server, client, name, every, start + duration,
                                             killed, random.Random(seed)))
        calls: list[asyncio.Task[Fate]] = []
        total = int(rate * duration)
        for request_id in range(total):
            # Open loop: each request leaves at its time, whatever became of the earlier ones.
            # Always a yield, even when behind: the answers and the killer share this loop.
            await asyncio.sleep(max(0.0, start + request_id / rate - time.monotonic()))
            headers = {"idempotency-key": f"{name}-{request_id}"} if idempotency_keys else {}
            calls.append(asyncio.create_task(_one(connections, name, request_id, sleep,
                                                  headers)))
        sent_in = time.monotonic() - start
        fates = await asyncio.gather(*calls)
        await killer
        connections.close()
        return list(fates), killed, sent_in


def run_with_kills(server: StratusServer, name: str, markers: Path, *, rate: float,
                   duration: float, every: float = 2.0, sleep: float = 0.05,
                   idempotency_keys: bool = False, seed: int = 21) -> Run:
    """Send ``rate`` requests a second for ``duration`` seconds and kill a ready replica every
    ``every`` seconds meanwhile; each request's handler sleeps ``sleep`` seconds."""
    fates, killed, sent_in = asyncio.run(_drive(server, name, rate, duration, every, sleep,
                                                idempotency_keys, seed))
    return Run(fates, killed, sent_in, read_markers(markers))
