"""Continuous training on a real server: a schedule whose tick submits a training job that
registers a model version past its gate, the tick kept in the job's spec and recorded on the
schedule; a tick submitted before a crash (its record lost) is not submitted again at the
restart; a dataset deleted since creation loses its tick; bad job bodies are refused as
``POST /api/jobs`` refuses them; ``/api/gc`` keeps a scheduled job's code."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from test_jobs import push_iris
from test_model_loop import ended

from server import APPS, TEST_ENV, StratusServer, wait_for

TRAIN = "train.py:train_sklearn"


@pytest.fixture(scope="module")
def ct_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StratusServer]:
    # COLUMNS: the CLI's table is not folded to a pipe's 80 columns.
    instance = StratusServer(tmp_path_factory.mktemp("ct"), {**TEST_ENV, "COLUMNS": "200"})
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def iris(ct_server: StratusServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    push_iris(ct_server, tmp_path_factory.mktemp("iris"), "iris")
    return "iris"  # no version: each tick trains on the latest


def job_body(server: StratusServer, dataset: str, **fields: Any) -> dict[str, Any]:
    return {"code": {"bundle": server.upload("lifecycle"), "entrypoint": TRAIN},
            "datasets": [dataset], "params": {"dataset": dataset}, **fields}


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


def once_at(moment: int) -> str:
    """A cron expression (with croniter's trailing seconds field) that names one second."""
    at = datetime.fromtimestamp(moment, UTC)
    return f"{at.minute} {at.hour} {at.day} {at.month} * {at.second}"


def jobs_of(server: StratusServer, schedule: str) -> list[dict[str, Any]]:
    views: list[dict[str, Any]] = server.http.get("/api/jobs", params={"limit": 1000}).json()["jobs"]
    return [v for v in views if (v["spec"].get("source") or {}).get("schedule") == schedule]


def test_a_tick_trains_registers_and_is_not_submitted_again_after_a_restart(
        ct_server: StratusServer, iris: str, tmp_path: Path) -> None:
    server, http = ct_server, ct_server.http
    # The CLI makes a yearly schedule of the same job: its code is imported now (and kept warm,
    # so the timed schedule below is made well before its tick).
    target = f"{APPS / 'lifecycle' / 'train.py'}:train_sklearn"
    made = json.loads(server.cli(
        "jobs", "schedule", "yearly", target, "--cron", "0 3 1 1 *", "--timezone",
        "Europe/Paris", "--dataset", iris, "--param", f"dataset={iris}", "--register",
        "iris-ct", "--gate", "accuracy>=0.8", "--gate-split", "train", "--json").stdout)
    assert made["target"] == "job" and made["deployment"] is None and made["payload"] is None
    assert made["job"]["code"]["entrypoint"] == TRAIN and made["job"]["params"] == {"dataset": iris}
    assert made["job"]["register"]["gate"] == ["accuracy>=0.8"]
    listed = server.cli("schedule", "ls").stdout
    assert "yearly" in listed and f"job {TRAIN}" in listed

    push_iris(server, tmp_path, "gone")  # a schedule made on it, then the dataset deleted
    tick = int(time.time()) + 4
    register = {"name": "iris-ct", "gate": ["accuracy>=0.8"], "split": "train"}
    for name, dataset in (("ct", iris), ("ct-gone", "gone@1")):
        created = http.post("/api/schedules", json={
            "name": name, "cron": once_at(tick), "catch_up": "one",
            "job": job_body(server, dataset, register=register)})
        assert created.status_code == 201, created.text
        assert created.json()["next_fire"] == iso(tick), "made after its tick: too slow"
    assert http.delete("/api/datasets/gone").status_code == 200

    found = wait_for(lambda: jobs_of(server, "ct"), 30, "the tick's job")
    assert len(found) == 1
    view = ended(server, found[0]["id"])
    assert view["status"] == "succeeded", view
    assert view["gate"]["passed"] is True and view["model_version"] == "1.0.0"
    spec = view["spec"]
    assert spec["submitted_by"] == "schedule ct"
    assert spec["source"] == {"kind": "schedule", "schedule": "ct", "tick": iso(tick)}
    assert view["params"]["dataset"] == iris and spec["params"] == {"dataset": iris}
    assert spec["resolved_datasets"] == [{"ref": iris, "name": "iris", "version": "1"}]
    version = http.get("/api/models/iris-ct/versions/1.0.0").json()
    assert version["lineage"]["job"] == view["id"] and version["lineage"]["dataset"] == "iris@1"
    shown = http.get("/api/schedules/ct").json()
    assert shown["last_fired"] == tick and shown["last_fired_at"] == iso(tick)
    # The deleted dataset's tick is lost, said so, and recorded all the same.
    gone = wait_for(lambda: (s := http.get("/api/schedules/ct-gone").json())["last_fired"] and s,
                    10, "the lost tick to be recorded")
    assert gone["last_fired"] == tick and jobs_of(server, "ct-gone") == []
    assert f"ct-gone: tick {iso(tick)}: job not submitted" in server.log_tail(400)

    # A crash between the submission and its record: the tick is due again at the restart
    # (catch_up one), and the job log shows it was submitted.
    server.stop()
    with sqlite3.connect(server.data_dir / "stratus.db") as db:
        db.execute("UPDATE schedules SET last_fired = NULL WHERE name = 'ct'")
    server.start()
    wait_for(lambda: http.get("/api/schedules/ct").json()["last_fired"] == tick, 30,
             "the restarted server to handle the tick again")
    assert [job["id"] for job in jobs_of(server, "ct")] == [view["id"]]
    assert f"ct: tick {iso(tick)} already submitted as job {view['id']}" in server.log_tail(200)
    assert http.get("/api/models/iris-ct/versions/1.1.0").status_code == 404
    for name in ("yearly", "ct", "ct-gone"):
        assert http.delete(f"/api/schedules/{name}").status_code == 200


BAD_JOBS: list[tuple[dict[str, Any], int, str]] = [
    ({"paramz": {}}, 400, "paramz"),
    ({"params": {"layers": [1, 2]}}, 400, "params"),
    ({"code": {"bundle": "0" * 64, "entrypoint": TRAIN}}, 404, "has not been uploaded"),
    ({"code": {"entrypoint": "train.py:nope"}}, 400, "nope"),
    ({"datasets": ["missing@1"]}, 404, "missing"),
    ({"register": {"name": "x", "gate": ["accuracy>>0.9"]}}, 400, "position"),
    ({"register": {"name": "x", "split": "validation"}}, 404, "validation"),
]


@pytest.mark.parametrize(("change", "status", "words"), BAD_JOBS)
def test_a_bad_job_is_refused_as_post_jobs_refuses_it(
        ct_server: StratusServer, iris: str, change: dict[str, Any], status: int,
        words: str) -> None:
    job = job_body(ct_server, f"{iris}@1")
    job.update({k: v for k, v in change.items() if k != "code"})
    job["code"].update(change.get("code", {}))
    direct = ct_server.http.post("/api/jobs", json=job)
    scheduled = ct_server.http.post("/api/schedules",
                                    json={"name": "bad", "cron": "0 3 * * *", "job": job})
    for response in (direct, scheduled):
        assert response.status_code == status, response.text
        assert words in response.json()["error"]["message"], response.text
    assert scheduled.json()["error"]["type"] == direct.json()["error"]["type"]
    assert ct_server.http.get("/api/schedules/bad").status_code == 404


def test_a_schedule_has_exactly_one_target(ct_server: StratusServer, iris: str) -> None:
    job = job_body(ct_server, iris)
    base = {"name": "bad", "cron": "0 3 * * *"}
    ct_server.deploy("basic", "app:Echo", name="ct-echo")
    for body, words in (({**base, "job": job, "deployment": "ct-echo"}, "exactly one"),
                        (base, "exactly one"),
                        ({**base, "job": job, "payload": {"a": 1}}, "payload")):
        response = ct_server.http.post("/api/schedules", json=body)
        assert response.status_code == 400, response.text
        assert words in response.json()["error"]["message"]
    _, key = ct_server.mint_key("default", "invoker")
    with ct_server.client_as(key) as invoker:
        refused = invoker.post("/api/schedules", json={**base, "job": job})
    assert refused.status_code == 403, refused.text
    # An invocation schedule is as it was: no job, its payload.
    made = ct_server.http.post("/api/schedules", json={**base, "deployment": "ct-echo"})
    assert made.status_code == 201, made.text
    assert made.json()["target"] == "invocation" and made.json()["payload"] == {}
    assert made.json()["job"] is None
    assert "deployment ct-echo" in ct_server.cli("schedule", "ls").stdout
    assert ct_server.http.delete("/api/schedules/bad").status_code == 200


def test_gc_keeps_the_code_of_a_scheduled_job(ct_server: StratusServer, iris: str,
                                              tmp_path: Path) -> None:
    code = tmp_path / "code"
    shutil.copytree(APPS / "lifecycle", code)
    (code / "marker.txt").write_text(str(time.time()))  # a bundle no job or revision names
    digest = ct_server.upload_dir(code)
    job = {"code": {"bundle": digest, "entrypoint": TRAIN}, "datasets": [iris],
           "params": {"dataset": iris}}
    made = ct_server.http.post("/api/schedules",
                               json={"name": "kept", "cron": "0 3 1 1 *", "job": job})
    assert made.status_code == 201, made.text
    assert ct_server.http.post("/api/gc", json={"grace_s": 0}).status_code == 200
    assert ct_server.http.head(f"/api/bundles/{digest}").status_code == 200
    assert ct_server.http.delete("/api/schedules/kept").status_code == 200
    assert ct_server.http.post("/api/gc", json={"grace_s": 0}).status_code == 200
    assert ct_server.http.head(f"/api/bundles/{digest}").status_code == 404
