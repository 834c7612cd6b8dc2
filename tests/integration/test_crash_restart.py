"""kill -9 of the server under load, then a restart on the same data dir: nothing of the old
run is left running, no cgroup of it remains, and the acknowledged deploys serve again. A
second server on a live server's data dir refuses to start and reaps nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from server import STRATUS, TEST_ENV, StratusServer, descendants, pid_alive, wait_for
from stratus.runtime.cgroups import parse_hierarchies


def _cgroups_of(server_pid: int) -> list[Path]:
    """The cgroup directories named after ``server_pid`` (runtime/cgroups.py: stratus-srv-
    <pid>-<start time>) in the hierarchies this process and its child the server share."""
    hierarchies = parse_hierarchies(Path("/proc/self/cgroup").read_text(),
                                    Path("/proc/self/mountinfo").read_text())
    return [path for hierarchy in hierarchies
            for path in hierarchy.directory.glob(f"stratus-srv-{server_pid}-*")]


async def _load(server: StratusServer, stop: threading.Event,
                results: list[int | str]) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30,
                                 headers={"authorization": f"Bearer {server.key}"}) as client:
        async def one_worker() -> None:
            while not stop.is_set():
                try:
                    response = await client.post("/api/deployments/crash-echo/invoke",
                                                 json={"sleep": 0.05})
                    results.append(response.status_code)
                except httpx.TransportError as exc:
                    results.append(type(exc).__name__)
                    return  # the server is gone

        await asyncio.gather(*(one_worker() for _ in range(16)))


# Alone (the solo step): any server that starts reaps the cgroups of servers no longer running,
# so another worker's server starting between this kill -9 and the check below reaped the
# orphan this test needs alive to show the restart reaps it (it happened in a CI run).
@pytest.mark.solo
def test_kill_9_under_load_then_restart_reaps_everything(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = StratusServer(data, TEST_ENV)
    first.start()
    try:
        first.deploy("basic", "app.py:Echo", name="crash-echo", min_replicas=2, max_replicas=2,
                     max_concurrency=8, ready=2)
        first.deploy("orphans", "app.py:Spawner", name="crash-spawner", min_replicas=1,
                     max_replicas=1, ready=1)
        spawned = first.invoke("crash-spawner")
        assert spawned.status_code == 200, spawned.text
        grandchild = spawned.json()["child"]  # in the replica's cgroup, in a session of its own
        # A second server started on the live one's data dir by mistake refuses to start,
        # and the live one's replicas are not reaped as a dead server's would be.
        replicas = {item["pid"] for item in first.status("crash-echo")["replicas"]["items"]}
        intruder = StratusServer(data, TEST_ENV)
        refused = subprocess.run([STRATUS, "serve", "--port", str(intruder.port), "--data-dir",
                                  str(data)], env=intruder.env, capture_output=True, text=True,
                                 timeout=60)
        assert refused.returncode != 0, refused.stderr
        assert f"is serving the data dir {data.resolve()}" in " ".join(refused.stderr.split())
        assert all(pid_alive(pid) for pid in replicas | {grandchild})
        assert first.invoke("crash-echo", {"still": True}).status_code == 200
        stop = threading.Event()
        results: list[int | str] = []
        loader = threading.Thread(target=lambda: asyncio.run(_load(first, stop, results)))
        loader.start()
        wait_for(lambda: len(results) >= 50, 30, "the load to get going")
        assert first.process is not None
        old_pid = first.process.pid
        old_run = descendants(old_pid)
        assert grandchild in old_run
        # Acknowledged just before the crash: revision 2 and its rollout (the routing).
        redeploy = first.deploy_raw("basic", "app.py:Echo", name="crash-echo", min_replicas=2,
                                    max_replicas=2, max_concurrency=8, config={"v": 2},
                                    rollout={"watch_s": 1})
        assert redeploy.status_code == 200 and redeploy.json()["revision"] == 2, redeploy.text
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
        stop.set()
        loader.join(30)
    finally:
        first.stop(signal.SIGKILL)
    counts = Counter(results)
    failed = sum(n for outcome, n in counts.items() if outcome != 200)
    assert set(counts) - {200} <= {"ReadError", "RemoteProtocolError", "ConnectError"}, counts
    assert failed >= 1, counts  # 16 callers keep requests in flight: some were cut off
    # Replicas notice at once (their connection ends); the handler's child does not.
    wait_for(lambda: not any(pid_alive(pid) for pid in old_run - {grandchild}), 10,
             "the replicas and zygotes to exit on their own")
    assert pid_alive(grandchild), "the orphan a restart must reap"

    second = StratusServer(data, TEST_ENV)
    started = time.monotonic()
    second.start()
    try:
        ready_after = time.monotonic() - started
        assert not pid_alive(grandchild), "the restart reaps the old run's orphan"
        assert [pid for pid in old_run if pid_alive(pid)] == []
        if os.geteuid() == 0:  # only root makes cgroups here
            assert _cgroups_of(old_pid) == []
        for name in ("crash-echo", "crash-spawner"):  # acknowledged: still there
            assert second.http.get(f"/api/deployments/{name}").status_code == 200
        # The rollout goes on from where it was: revision 2 takes all the traffic.
        wait_for(lambda: second.status("crash-echo")["traffic"] == {"2": 100}, 60,
                 "the acknowledged rollout to finish")
        served = second.invoke("crash-echo", {"after": True})
        assert served.status_code == 200 and served.json()["config"] == {"v": 2}, served.text
        print(f"killed {failed} in-flight requests of {len(results)}; ready again "
              f"{ready_after:.2f} s after the restart began")
    finally:
        second.stop()
