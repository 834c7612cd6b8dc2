"""A workflow execution survives kill -9 of the server: started again on the same data dir, the
server resumes it from its last recorded step; steps that ended (a parallel's finished branch
included) are not run again, the step that was in flight is. On SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_store import _postgres_database

from server import TEST_ENV, StratusServer, wait_for

DEFINITION = """\
name: wf-crash
timeout_s: 120
steps:
  - id: first
    type: task
    deployment: wf-add
    input: {a: $.input.n, b: 1}
  - id: fan
    type: parallel
    branches:
      - - id: quick
          type: task
          deployment: wf-add
          input: {a: 10, b: 20}
      - - id: nap
          type: task
          deployment: wf-slow
          input: {seconds: 4, tag: $.input.tag}
  - id: last
    type: task
    deployment: wf-add
    input: {a: $.steps.first.output.sum, b: $.steps.quick.output.sum}
"""


def _calls(log_dir: Path) -> list[str]:
    path = log_dir / "calls.log"
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    if request.param == "sqlite":
        yield {}
        return
    for url in _postgres_database():
        yield {"STRATUS_DATABASE_URL": url}


def test_an_execution_killed_mid_run_resumes_and_finishes_without_rerunning_ended_steps(
        tmp_path: Path, database: dict[str, str]) -> None:
    log_dir = tmp_path / "calls"
    log_dir.mkdir()
    os.chmod(log_dir, 0o777)  # replicas may run as other users
    server = StratusServer(tmp_path / "data", {**TEST_ENV, **database})
    server.start()
    try:
        for name, entry in (("wf-add", "Add"), ("wf-slow", "Slow")):
            server.deploy("workflows", f"app.py:{entry}", name=name, ready=1, min_replicas=1,
                          config={"log_dir": str(log_dir)})
        response = server.http.post("/api/workflows", content=DEFINITION,
                                    headers={"content-type": "application/yaml"})
        assert response.status_code == 201, response.text
        started = server.http.post("/api/workflows/wf-crash/executions",
                                   json={"n": 1, "tag": "t"})
        assert started.status_code == 202, started.text
        execution = started.json()["id"]
        wait_for(lambda: any(c.startswith("slow ") for c in _calls(log_dir)), 30,
                 "the slow step to start")

        def quick_recorded() -> bool:
            steps = server.http.get(f"/api/executions/{execution}").json()["steps"]
            return any(s["step"] == "quick" and s["state"] == "succeeded" for s in steps)

        wait_for(quick_recorded, 30, "the quick branch to be recorded")
        assert server.stop(signal.SIGKILL) == -signal.SIGKILL

        server.start()

        def ended() -> dict[str, Any] | None:
            view: dict[str, Any] = server.http.get(f"/api/executions/{execution}").json()
            return view if view["status"] != "running" else None

        view = wait_for(ended, 90, "the resumed execution to end")
        assert view["status"] == "succeeded", view
        assert view["output"] == {"sum": 32}  # 2 + 30: the branch's output read after a replay
        states = {s["step"]: (s["key"], s["state"], s["attempts"]) for s in view["steps"]}
        assert states == {"first": ("0", "succeeded", 1), "quick": ("1/0/0", "succeeded", 1),
                          "nap": ("1/1/0", "succeeded", 1), "fan": ("1", "succeeded", 1),
                          "last": ("2", "succeeded", 1)}
        calls = _calls(log_dir)
        assert sum(c.startswith("add ") and '"b": 1}' in c for c in calls) == 1, calls
        assert sum(c.startswith("add ") and '"b": 20}' in c for c in calls) == 1, calls
        assert sum(c.startswith("slow ") for c in calls) == 2, calls  # in flight: run again
        assert sum(c.startswith("add ") and '"b": 30}' in c for c in calls) == 1, calls
    finally:
        server.stop()
