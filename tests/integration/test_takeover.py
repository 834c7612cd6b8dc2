"""`stratus serve --takeover` on a real server under load: the server execs its next version
in place, which adopts the listening socket, the idle connections and the running replicas,
so no request fails, none pays a cold start, and every replica and zygote keeps its pid."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Any

import httpx

from server import TEST_ENV, StratusServer, descendants, wait_for
from takeover import run_with_takeover, take_over


def _replica_pids(server: StratusServer, name: str) -> set[int]:
    return {item["pid"] for item in server.status(name)["replicas"]["items"]}


def test_an_upgrade_under_load_fails_nothing_and_keeps_every_process(
        fresh_server: StratusServer) -> None:
    server = fresh_server
    server.deploy("basic", "app.py:Echo", name="tk-echo", min_replicas=2, max_replicas=2,
                  max_concurrency=8, ready=2)
    assert server.process is not None
    pid = server.process.pid
    replicas, family = _replica_pids(server, "tk-echo"), descendants(pid)

    run = run_with_takeover(server, "tk-echo", rate=50, duration=6, at=2)
    print(f"\n{run.summary()}; report {run.report}")
    assert run.takeover.returncode == 0, run.summary()
    assert not run.failed, run.summary()
    assert not run.cold, run.summary()
    assert {fate.pid for fate in run.fates} == replicas  # served by the same two throughout
    assert run.report["pid"] == pid and run.report["generation"] == 1, run.report
    assert run.report["replicas"] == 2, run.report
    assert server.process.poll() is None  # the same process: exec, not a new server
    assert _replica_pids(server, "tk-echo") == replicas
    assert family <= descendants(pid), "a zygote or replica of the first version is gone"

    # Again, idle: the version that took over hands on as the first did.
    second = take_over(server)
    assert second.returncode == 0, second.stderr
    assert "generation" not in second.stderr and "took over" in second.stderr, second.stderr
    report = json.loads((server.data_dir / "run" / "takeover.json").read_text())
    assert report["generation"] == 2 and report["replicas"] == 2, report
    assert _replica_pids(server, "tk-echo") == replicas

    # What the adopted version starts itself works: a new deployment's replica, forked by
    # the adopted zygote on demand, says hello on the socket this version opened.
    server.deploy("basic", "app.py:Echo", name="tk-new")
    answer = server.http.post("/api/deployments/tk-new/invoke", json={"after": "takeover"})
    assert answer.status_code == 200 and answer.json()["echo"] == {"after": "takeover"}
    assert answer.headers["x-stratus-cold-start"] == "true"
    # New code: the adopted profile zygote forks a revision zygote that imports it.
    server.deploy("traffic", "app.py:Variant", name="tk-code")
    answer = server.http.post("/api/deployments/tk-code/invoke", json={"new": "code"})
    assert answer.status_code == 200 and answer.json()["echo"] == {"new": "code"}
    assert server.stop() == 0
    assert not descendants(pid), "a replica or zygote outlived the server"


def test_a_stream_in_flight_finishes_across_a_takeover(fresh_server: StratusServer) -> None:
    server = fresh_server
    server.deploy("basic", "app.py:Counter", name="tk-stream", min_replicas=1,
                  max_replicas=1, ready=1)
    before = _replica_pids(server, "tk-stream")
    items: list[dict[str, Any]] = []
    first = threading.Event()

    def stream() -> None:
        with httpx.Client(base_url=server.url, timeout=60,
                          headers={"authorization": f"Bearer {server.key}"}) as client, \
                client.stream("POST", "/api/deployments/tk-stream/invoke",
                              json={"n": 10, "pause": 0.3},
                              headers={"accept": "application/x-ndjson"}) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                items.append(json.loads(line))
                first.set()

    reader = threading.Thread(target=stream)
    reader.start()
    assert first.wait(30), "the stream never started"
    result = take_over(server)
    reader.join(60)
    assert result.returncode == 0, result.stderr
    assert [item["index"] for item in items] == list(range(10))
    assert _replica_pids(server, "tk-stream") == before
    again = server.http.post("/api/deployments/tk-stream/invoke", json={"n": 2})
    assert again.status_code == 200


def test_a_takeover_with_no_server_on_the_data_dir_says_so(tmp_path: Path) -> None:
    idle = StratusServer(tmp_path / "data", dict(TEST_ENV))
    idle.data_dir.mkdir(parents=True)
    result = take_over(idle)
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "no stratus server has run on" in result.stderr, result.stderr
    (idle.data_dir / "run").mkdir()
    (idle.data_dir / "run" / "server.lock").write_text("12345\n")  # left by a stopped server
    result = take_over(idle)
    assert result.returncode == 1 and "no stratus server is running on" in result.stderr, \
        result.stderr


def test_sigusr2_during_a_drain_is_ignored(fresh_server: StratusServer) -> None:
    server = fresh_server
    assert server.process is not None
    server.process.send_signal(signal.SIGINT)
    server.process.send_signal(signal.SIGUSR2)
    assert server.process.wait(30) == 0
    wait_for(lambda: "SIGUSR2 ignored" in server.log_tail(200) or None, 5,
             "the server to say it ignored the takeover")
