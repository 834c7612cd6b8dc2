"""Workflows on a real server with real deployments: a pipeline with a parallel branch, a map and
a catch gives the expected output and history; bad definitions get 400 naming the line and the
field, an unknown deployment 404; namespaces are kept apart; a running execution cancels."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server import StratusServer, wait_for

PIPELINE = """\
name: wf-pipeline
timeout_s: 60
steps:
  - id: total
    type: task
    deployment: wf-add
    input: {a: $.input.a, b: $.input.b}
  - id: fan
    type: parallel
    branches:
      - - id: twice
          type: task
          deployment: wf-double
          input: {value: $.steps.total.output.sum}
      - - id: flaky
          type: task
          deployment: wf-fail-once
          input: {key: $.input.key}
          retry: {max_attempts: 3, base_s: 0.05}
  - id: each
    type: map
    items: $.input.values
    concurrency: 2
    step: {id: dbl, type: task, deployment: wf-double, input: {value: $.item}}
  - id: risky
    type: task
    deployment: wf-always-fail
    input: {why: test}
    catch: {next: recover}
  - id: never
    type: fail
    error: should_not_run
  - id: recover
    type: succeed
    output:
      total: $.steps.total.output.sum
      fan: $.steps.fan.output
      each: $.steps.each.output
      twice: $.steps.twice.output.value
      caught: $.error.type
      caught_step: $.error.step
"""

SLOW = """\
name: wf-slow
steps:
  - id: nap
    type: task
    deployment: wf-slow
    input: {seconds: 30}
  - id: after
    type: task
    deployment: wf-double
    input: {value: 1}
"""


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("wf-calls")
    os.chmod(path, 0o777)  # replicas may run as other users
    return path


@pytest.fixture(scope="module")
def deployed(server: StratusServer, log_dir: Path) -> Iterator[StratusServer]:
    config = {"log_dir": str(log_dir)}
    for name, entry in (("wf-add", "Add"), ("wf-double", "Double"), ("wf-fail-once", "FailOnce"),
                        ("wf-always-fail", "AlwaysFail"), ("wf-slow", "Slow")):
        server.deploy("workflows", f"app.py:{entry}", name=name, config=config, min_replicas=1,
                      ready=1, max_concurrency=4)
    yield server
    for name in ("wf-add", "wf-double", "wf-fail-once", "wf-always-fail", "wf-slow"):
        server.delete(name)


def _deploy(server: StratusServer, text: str, **headers: str) -> Any:
    return server.http.post("/api/workflows", content=text.encode(),
                            headers={"content-type": "application/yaml", **headers})


def test_a_pipeline_with_parallel_map_and_catch_gives_its_output_and_history(
        deployed: StratusServer, log_dir: Path) -> None:
    response = _deploy(deployed, PIPELINE)
    assert response.status_code in (200, 201), response.text
    run = deployed.http.post("/api/workflows/wf-pipeline/executions?wait=true&timeout_s=60",
                             json={"a": 2, "b": 3, "key": "k1", "values": [1, 2, 3]})
    assert run.status_code == 200, run.text
    execution = run.json()
    assert execution["status"] == "succeeded", execution
    assert execution["output"] == {
        "total": 5, "fan": [{"value": 10}, {"ok": True, "key": "k1"}],
        "each": [{"value": 2}, {"value": 4}, {"value": 6}], "twice": 10,
        "caught": "handler_error", "caught_step": "risky"}
    steps = {step["key"]: step for step in execution["steps"]}
    assert {key: (s["step"], s["state"]) for key, s in steps.items()} == {
        "0": ("total", "succeeded"), "1/0/0": ("twice", "succeeded"),
        "1/1/0": ("flaky", "succeeded"), "1": ("fan", "succeeded"),
        "2/0/0": ("dbl", "succeeded"), "2/1/0": ("dbl", "succeeded"),
        "2/2/0": ("dbl", "succeeded"), "2": ("each", "succeeded"),
        "3": ("risky", "caught"), "4": ("recover", "succeeded")}
    assert steps["1/1/0"]["attempts"] == 2  # failed once, retried
    assert steps["3"]["attempts"] == 1 and steps["3"]["error"]["type"] == "handler_error"
    assert steps["0"]["input"] == {"a": 2, "b": 3} and steps["0"]["output"] == {"sum": 5}
    assert steps["2/1/0"]["input"] == {"value": 2}
    for step in steps.values():
        assert step["finished_at"] >= step["started_at"] > 0 and step["duration_ms"] >= 0
    assert [node["id"] for node in execution["graph"]] == [
        "total", "fan", "each", "risky", "never", "recover"]
    # Shown again later, from the store alone.
    again = deployed.http.get(f"/api/executions/{execution['id']}").json()
    assert again["output"] == execution["output"] and len(again["steps"]) == 10
    calls = (log_dir / "calls.log").read_text().splitlines()
    assert sum(line.startswith("fail-once ") for line in calls) == 2
    assert not any(line.startswith("never") for line in calls)


def test_an_execution_started_without_waiting_is_polled_listed_and_filtered(
        deployed: StratusServer) -> None:
    assert _deploy(deployed, PIPELINE).status_code in (200, 201)
    started = deployed.http.post("/api/workflows/wf-pipeline/executions",
                                 json={"a": 1, "b": 1, "key": "k2", "values": []})
    assert started.status_code == 202, started.text
    body = started.json()
    assert body["status"] == "running" and started.headers["location"].endswith(body["id"])

    def ended() -> dict[str, Any] | None:
        view: dict[str, Any] = deployed.http.get(f"/api/executions/{body['id']}").json()
        return view if view["status"] != "running" else None

    view = wait_for(ended, 60, "the execution to end")
    assert view["status"] == "succeeded" and view["output"]["each"] == []
    listed = deployed.http.get("/api/executions?workflow=wf-pipeline&status=succeeded").json()
    assert body["id"] in [e["id"] for e in listed["executions"]]
    assert all(e["status"] == "succeeded" for e in listed["executions"])
    first = deployed.http.get("/api/executions?workflow=wf-pipeline&limit=1").json()
    assert len(first["executions"]) == 1 and first["next_cursor"]
    second = deployed.http.get("/api/executions", params={
        "workflow": "wf-pipeline", "limit": 1, "cursor": first["next_cursor"]}).json()
    assert second["executions"][0]["id"] != first["executions"][0]["id"]
    assert deployed.http.get("/api/executions?status=bogus").status_code == 400


def test_a_running_execution_is_cancelled(deployed: StratusServer) -> None:
    assert _deploy(deployed, SLOW).status_code in (200, 201)
    started = deployed.http.post("/api/workflows/wf-slow/executions", json={}).json()

    def napping() -> bool:
        steps = deployed.http.get(f"/api/executions/{started['id']}").json()["steps"]
        return any(s["step"] == "nap" and s["state"] == "running" for s in steps)

    wait_for(napping, 30, "the slow step to run")
    cancelled = deployed.http.delete(f"/api/executions/{started['id']}")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert [s["step"] for s in cancelled.json()["steps"]] == []  # nap never ended
    assert deployed.http.delete(f"/api/executions/{started['id']}").status_code == 409


BAD = [
    ("name: wf-bad\nsteps:\n  - id: a\n    type: task\n    deployment: wf-add\n    inptu: {}\n",
     400, ["line 6", "steps[0].inptu", "unknown field"]),
    ("name: wf-bad\nsteps:\n  - id: a\n    type: task\n", 400,
     ["line 3", "steps[0].deployment", "missing"]),
    ("name: wf-bad\nsteps:\n  - id: a\n    type: task\n    deployment: wf-add\n"
     "    retry: {max_attempts: many}\n", 400, ["line 6", "steps[0].retry.max_attempts"]),
    ("name: wf-bad\nsteps:\n  - id: a\n    type: task\n    deployment: wf-add\n  - {id: b\n",
     400, ["line 7", "malformed YAML"]),
    ("name: wf-bad\nsteps:\n  - {id: a, type: task, deployment: wf-add, next: b}\n"
     "  - {id: b, type: task, deployment: wf-add, next: a}\n", 400, ["loop", "a -> b -> a"]),
    ("name: wf-bad\nsteps:\n  - id: a\n    type: task\n    deployment: wf-add\n"
     "    input: $.steps.ghost.output\n", 400, ["line 3", "unknown step 'ghost'"]),
    ("name: wf-bad\nsteps:\n  - {id: a, type: task, deployment: wf-add, catch: {next: nowhere}}\n",
     400, ["line 3", "catch.next", "unknown step 'nowhere'"]),
    ("name: wf-bad\nsteps:\n  - id: a\n    type: task\n    deployment: wf-add\n  - id: b\n"
     "    type: task\n    deployment: wf-missing\n", 404, ["line 6", "'wf-missing'"]),
]


@pytest.mark.parametrize(("text", "status", "words"), BAD)
def test_a_bad_definition_is_refused_naming_line_and_field(
        deployed: StratusServer, text: str, status: int, words: list[str]) -> None:
    response = _deploy(deployed, text)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == ("not_found" if status == 404 else "invalid_request")
    for word in words:
        assert word in error["message"], error["message"]
    assert deployed.http.get("/api/workflows/wf-bad").status_code == 404


def test_json_bodies_and_namespaces(deployed: StratusServer) -> None:
    definition = {"name": "wf-json", "steps": [
        {"id": "add", "type": "task", "deployment": "wf-add", "input": {"a": "$.input.n", "b": 1}}]}
    assert deployed.http.post("/api/workflows", json=definition).status_code in (200, 201)
    wrapped = {"definition": "name: wf-json2\nsteps:\n  - {id: x, type: succeed}\n"}
    assert deployed.http.post("/api/workflows", json=wrapped).status_code in (200, 201)
    names = [w["name"] for w in deployed.http.get("/api/workflows").json()["workflows"]]
    assert {"wf-json", "wf-json2"} <= set(names)
    run = deployed.http.post("/api/workflows/wf-json/executions?wait=true", json={"n": 41})
    assert run.json()["output"] == {"sum": 42}
    shown = deployed.http.get("/api/workflows/wf-json").json()
    assert shown["deployments"] == ["wf-add"] and shown["steps"][0]["id"] == "add"
    # Another namespace sees none of it.
    other = deployed.client_as(deployed.mint_key("wf-other", "developer")[1])
    assert other.get("/api/workflows/wf-json").status_code == 404
    assert other.post("/api/workflows/wf-json/executions", json={}).status_code == 404
    assert other.get(f"/api/executions/{run.json()['id']}").status_code == 404
    assert other.delete(f"/api/executions/{run.json()['id']}").status_code == 404
    assert other.get("/api/workflows").json()["workflows"] == []
    assert other.post("/api/workflows", json=definition).status_code == 404  # its own: no wf-add
    assert deployed.http.delete("/api/workflows/wf-json2").status_code == 200
    assert deployed.http.get("/api/workflows/wf-json2").status_code == 404


def test_the_cli_deploys_lists_runs_and_shows(deployed: StratusServer, tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(PIPELINE.replace("wf-pipeline", "wf-cli"))
    assert "workflow wf-cli" in deployed.cli("workflow", "deploy", str(path)).stderr
    assert "wf-cli" in deployed.cli("workflow", "ls").stdout
    result = deployed.cli("workflow", "run", "wf-cli",
                          '{"a": 1, "b": 2, "key": "cli", "values": [5]}', "--wait")
    output = json.loads(result.stdout)
    assert output["total"] == 3 and output["each"] == [{"value": 10}]
    execution = result.stderr.split()[1]
    shown = deployed.cli("workflow", "show", execution).stdout
    for word in ("wf-cli", "succeeded", "total", "fan", "twice", "flaky", "attempts 2", "dbl",
                 "risky", "caught", "recover"):
        assert word in shown, shown
    started = deployed.cli("workflow", "run", "wf-cli", '{"a": 1}').stdout.strip()
    assert len(started) == 32
    listed = deployed.cli("workflow", "executions", "--workflow", "wf-cli").stdout
    assert execution in listed
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: wf-cli-bad\nsteps:\n  - id: a\n    typ: task\n")
    failed = deployed.cli("workflow", "deploy", str(bad), check=False)
    assert failed.returncode == 1 and "line 4" in failed.stderr and "steps[0].typ" in failed.stderr


def test_an_invoker_runs_workflows_but_only_a_developer_deploys_them(
        deployed: StratusServer) -> None:
    text = "name: wf-roles\nsteps:\n  - {id: a, type: task, deployment: wf-add}\n"
    assert _deploy(deployed, text).status_code in (200, 201)
    invoker = deployed.client_as(deployed.mint_key("default", "invoker")[1])
    viewer = deployed.client_as(deployed.mint_key("default", "viewer")[1])
    denied = invoker.post("/api/workflows", content=text,
                          headers={"content-type": "application/yaml"})
    assert denied.status_code == 403 and denied.json()["error"]["type"] == "forbidden"
    assert invoker.delete("/api/workflows/wf-roles").status_code == 403
    run = invoker.post("/api/workflows/wf-roles/executions?wait=true", json={"a": 1, "b": 2})
    assert run.status_code == 200 and run.json()["output"] == {"sum": 3}
    assert viewer.post("/api/workflows/wf-roles/executions", json={}).status_code == 403
    assert viewer.get(f"/api/executions/{run.json()['id']}").status_code == 200


TIMEOUTS = """\
name: wf-timeouts
steps:
  - id: pick
    type: choice
    choices:
      - {variable: $.input.mode, equals: step, next: short}
    default: long
  - id: short
    type: task
    deployment: wf-slow
    input: {seconds: 5}
    timeout_s: 0.5
    retry: {max_attempts: 2, base_s: 0.01}
    catch: {next: late, errors: [timeout]}
  - id: late
    type: succeed
    output: {caught: $.error.type, step: $.error.step}
  - id: long
    type: task
    deployment: wf-slow
    input: {seconds: 5}
"""


def test_choices_step_timeouts_with_retries_and_the_execution_timeout(
        deployed: StratusServer) -> None:
    assert _deploy(deployed, TIMEOUTS).status_code in (200, 201)
    run = deployed.http.post("/api/workflows/wf-timeouts/executions?wait=true",
                             json={"mode": "step"}).json()
    assert run["status"] == "succeeded" and run["output"] == {"caught": "timeout", "step": "short"}
    steps = {s["step"]: s for s in run["steps"]}
    assert steps["pick"]["chosen"] == "short"
    assert steps["short"]["state"] == "caught" and steps["short"]["attempts"] == 2
    assert 1.0 <= steps["short"]["duration_ms"] / 1000 < 4.0  # two attempts of 0.5 s, not 5 s
    # The whole execution's limit: the same definition with timeout_s, down the long path.
    limited = TIMEOUTS.replace("name: wf-timeouts\n", "name: wf-timeouts\ntimeout_s: 1\n")
    assert _deploy(deployed, limited).status_code == 200
    run = deployed.http.post("/api/workflows/wf-timeouts/executions?wait=true",
                             json={"mode": "whole"}).json()
    assert run["status"] == "timed_out" and run["error"]["type"] == "timeout"
    assert run["duration_s"] < 4.0
    assert [s["step"] for s in run["steps"]] == ["pick"]  # long never ended


FAILING = """\
name: wf-failing
steps:
  - id: fan
    type: parallel
    branches:
      - - {id: sleepy, type: task, deployment: wf-slow, input: {seconds: 5}}
      - - {id: bad, type: task, deployment: wf-always-fail}
  - {id: after, type: succeed}
"""


def test_an_uncaught_failure_cancels_the_other_branches_and_fails_the_execution(
        deployed: StratusServer) -> None:
    assert _deploy(deployed, FAILING).status_code in (200, 201)
    started = time.monotonic()
    run = deployed.http.post("/api/workflows/wf-failing/executions?wait=true", json={}).json()
    assert time.monotonic() - started < 4.0  # the sleepy branch did not hold it up
    assert run["status"] == "failed"
    assert run["error"]["type"] == "handler_error" and run["error"]["step"] == "bad"
    assert {(s["step"], s["state"]) for s in run["steps"]} == {("bad", "failed"), ("fan", "failed")}
    # A map over something that is not a list fails with its own error type.
    assert _deploy(deployed, PIPELINE).status_code == 200
    run = deployed.http.post("/api/workflows/wf-pipeline/executions?wait=true",
                             json={"a": 1, "b": 1, "key": "k9", "values": "nope"}).json()
    assert run["status"] == "failed" and run["error"]["type"] == "invalid_items"
    assert run["error"]["step"] == "each"
