"""Crash tests of the async queue with real processes: kill -9 the server, or its replicas, in
the middle of a backlog of 1,000 invocations; every one still succeeds, with its effect once."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from server import TEST_ENV, StratusServer, searchable_above, wait_for

BACKLOG = 1000

pytestmark = pytest.mark.timeout(600)


async def _enqueue_all(server: StratusServer, name: str, count: int) -> list[str]:
    headers = {"authorization": f"Bearer {server.key}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60) as client:
        gate = asyncio.Semaphore(16)

        async def one(index: int) -> str:
            async with gate:
                response = await client.post(f"/api/deployments/{name}/invoke?mode=async",
                                             json={"i": index, "sleep": 0.3},
                                             headers={"idempotency-key": f"job-{index}"})
                assert response.status_code == 202, response.text
                return str(response.json()["id"])

        return list(await asyncio.gather(*(one(i) for i in range(count))))


def _count(server: StratusServer, name: str, status: str) -> int:
    total, cursor = 0, None
    while True:
        params: dict[str, Any] = {"deployment": name, "status": status, "limit": 500}
        if cursor:
            params["cursor"] = cursor
        page = server.http.get("/api/invocations", params=params).json()
        total += len(page["invocations"])
        cursor = page["next_cursor"]
        if not cursor:
            return total


def _deploy(server: StratusServer, markers: Path, name: str) -> None:
    markers.mkdir()
    markers.chmod(0o777)  # replicas run as their namespace's user
    searchable_above(markers)
    server.deploy("asyncjobs", "app.py:once", name=name, max_replicas=2, max_concurrency=8,
                  config={"marker_dir": str(markers)},
                  async_invocations={"share": 1.0, "backoff_base_s": 0.05,
                                     "backoff_cap_s": 0.5, "max_attempts": 5})


def _effects(markers: Path, ids: list[str]) -> Counter[str]:
    lines = (markers / "effects.log").read_text().split()
    effects = Counter(lines)
    assert set(effects) == set(ids), f"{len(set(ids) - set(effects))} lost"
    assert max(effects.values()) == 1, [k for k, v in effects.items() if v > 1][:5]
    return effects


def test_kill_9_of_the_server_mid_backlog_loses_nothing(tmp_path: Path) -> None:
    server = StratusServer(tmp_path / "data", TEST_ENV)
    server.start()
    markers = tmp_path / "markers"
    try:
        _deploy(server, markers, "crash-server")
        ids = asyncio.run(_enqueue_all(server, "crash-server", BACKLOG))
        wait_for(lambda: _count(server, "crash-server", "succeeded") >= 100, 120,
                 "some of the backlog to run")
        server.stop(signal.SIGKILL)
        done_before = len((markers / "effects.log").read_text().split())
        assert done_before < BACKLOG, "the backlog finished before the kill: make it longer"
        server.start()
        wait_for(lambda: _count(server, "crash-server", "succeeded") == BACKLOG, 300,
                 "every invocation to succeed after the restart", interval=1.0)
        _effects(markers, ids)
        runs = (markers / "runs.log").read_text().split()
        # Reruns happen (at-least-once) only for what was in flight at the kill.
        assert len(runs) - BACKLOG <= 2 * 8, len(runs) - BACKLOG
    finally:
        server.stop()


def test_kill_9_of_replicas_mid_backlog_loses_nothing(tmp_path: Path) -> None:
    server = StratusServer(tmp_path / "data", TEST_ENV)
    server.start()
    markers = tmp_path / "markers"
    try:
        _deploy(server, markers, "crash-replicas")
        ids = asyncio.run(_enqueue_all(server, "crash-replicas", BACKLOG))
        killed = 0
        deadline = time.monotonic() + 120
        while killed < 3 and time.monotonic() < deadline:
            target = 150 * (killed + 1)
            wait_for(lambda: _count(server, "crash-replicas", "succeeded") >= target,  # noqa: B023
                     120, "the backlog to progress")
            view = server.status("crash-replicas")
            pids = [item["pid"] for item in view["replicas"]["items"]
                    if item["state"] == "ready" and item["pid"]]
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed += 1
        assert killed == 3
        wait_for(lambda: _count(server, "crash-replicas", "succeeded") == BACKLOG, 300,
                 "every invocation to succeed", interval=1.0)
        _effects(markers, ids)
        assert _count(server, "crash-replicas", "dead") == 0
    finally:
        server.stop()
