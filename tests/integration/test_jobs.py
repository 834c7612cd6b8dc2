"""Jobs on a real server: workers forked from the replicas' zygotes run user code that logs
metrics and saves a torch MLP and a scikit-learn model; a job that raises, one that runs out
of memory, one that is cancelled; roles and namespaces; a server killed under a running job."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sklearn.datasets import load_iris

from server import APPS, STRATUS, TEST_ENV, StratusServer, pid_alive, wait_for

ENDED = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def jobs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StratusServer]:
    data_dir = tmp_path_factory.mktemp("jobs")
    (data_dir / "stratus.yaml").write_text("jobs:\n  max_running: 1\n")  # the rest queue
    instance = StratusServer(data_dir, TEST_ENV)
    instance.start()
    yield instance
    instance.stop()


def submit(server: StratusServer, entrypoint: str, http: httpx.Client | None = None,
           **fields: Any) -> httpx.Response:
    digest = server.upload("jobs")
    body = {"code": {"bundle": digest, "entrypoint": entrypoint}, **fields}
    return (http or server.http).post("/api/jobs", json=body)


def run(server: StratusServer, entrypoint: str, **fields: Any) -> dict[str, Any]:
    response = submit(server, entrypoint, **fields)
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    assert job["id"].startswith("job-") and job["status"] in ("queued", "running")
    return job


def wait_ended(server: StratusServer, job_id: str, http: httpx.Client | None = None,
               timeout: float = 120) -> dict[str, Any]:
    client = http or server.http

    def ended() -> dict[str, Any] | None:
        view: dict[str, Any] = client.get(f"/api/jobs/{job_id}").json()
        return view if view["status"] in ENDED else None

    return wait_for(ended, timeout, f"job {job_id} to end", interval=0.1)


def events(server: StratusServer, job_id: str) -> list[dict[str, Any]]:
    response = server.http.get(f"/api/jobs/{job_id}/events")
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["events"]
    return found


def test_a_job_logs_its_metrics_and_saves_a_torch_mlp(jobs_server: StratusServer) -> None:
    job = run(jobs_server, "train.py:train_mlp", params={"epochs": 6, "lr": 0.05, "hidden": 8},
              experiment="iris-mlp")
    view = wait_ended(jobs_server, job["id"])
    assert view["status"] == "succeeded", view
    history = events(jobs_server, job["id"])
    kinds = [event["type"] for event in history]
    assert kinds[:3] == ["JobSubmitted", "JobStarted", "ParamsLogged"]
    assert kinds[-3:] == ["CheckpointSaved", "ModelSaved", "JobCompleted"]
    assert [event["seq"] for event in history] == list(range(1, len(history) + 1))
    epochs = [event["data"]["epoch"] for event in history if event["type"] == "EpochCompleted"]
    assert epochs == [1, 2, 3, 4, 5, 6]
    losses = [event["data"]["loss"] for event in history if event["type"] == "EpochCompleted"]
    assert losses[-1] < losses[0]
    final = history[-1]["data"]["metrics"]
    assert final["loss"] == losses[-1] and 0.5 < final["accuracy"] <= 1.0 and final["lr"] == 0.05
    assert view["params"] == {"epochs": 6, "lr": 0.05, "hidden": 8, "optimizer": "adam",
                              "rows": 150}
    assert view["total_epochs"] == 6 and view["epoch"] == 6 and view["experiment"] == "iris-mlp"
    model = view["model"]
    assert model["format"] == "safetensors" and model["framework"] == "torch"
    assert model["meta"]["class_path"] == "train:MLP" and model["meta"]["job"] == job["id"]
    assert model["signature"]["inputs"][0]["shape"] == [-1, 4]
    weights = model["files"]["model.safetensors"]
    assert jobs_server.http.head(f"/api/blobs/{weights['sha256']}").status_code == 200
    # The platform wrote the weights for the job's namespace: they are its, and only its.
    mine = jobs_server.client_as(jobs_server.mint_key("default", "developer")[1])
    theirs = jobs_server.client_as(jobs_server.mint_key("jobs-elsewhere", "developer")[1])
    with mine, theirs:
        assert mine.head(f"/api/blobs/{weights['sha256']}").status_code == 200
        assert theirs.head(f"/api/blobs/{weights['sha256']}").status_code == 404
    started = next(event for event in history if event["type"] == "JobStarted")
    assert started["data"]["attempt"] == 1 and started["data"]["pid"] > 0
    curves = jobs_server.http.get(f"/api/jobs/{job['id']}/metrics").json()
    assert [point[0] for point in curves["curves"]["loss"]] == [1, 2, 3, 4, 5, 6]
    assert curves["metrics"] == final
    log = jobs_server.http.get(f"/api/jobs/{job['id']}/logs").text
    assert "first line of train_mlp" in log and "epoch 6 loss" in log


def test_a_job_saves_a_scikit_learn_model_as_a_trusted_pickle(jobs_server: StratusServer) -> None:
    job = run(jobs_server, "train.py:train_sklearn", params={"C": 2.0}, experiment="iris-lr")
    view = wait_ended(jobs_server, job["id"])
    assert view["status"] == "succeeded", view
    model = view["model"]
    assert (model["format"], model["framework"]) == ("pickle", "sklearn")
    assert model["meta"]["trusted_pickle"] is True
    assert model["meta"]["class_path"].endswith(":LogisticRegression")
    assert view["metrics"]["accuracy"] > 0.9
    runs = jobs_server.http.get("/api/jobs", params={"experiment": "iris-lr"}).json()["jobs"]
    assert [run["id"] for run in runs] == [job["id"]]


def test_a_job_that_raises_fails_with_its_traceback_in_a_log_only_its_namespace_reads(
        jobs_server: StratusServer) -> None:
    job = run(jobs_server, "train.py:fail", params={"lr": -1})
    view = wait_ended(jobs_server, job["id"])
    assert (view["status"], view["reason"]) == ("failed", "error"), view
    assert view["error"] == "ValueError: the learning rate must be positive, not -1"
    assert view["metrics"] == {"progress": 0.5}
    log = jobs_server.http.get(f"/api/jobs/{job['id']}/logs").text
    lines = [json.loads(line) for line in log.splitlines()]
    trace = "\n".join(line["message"] for line in lines if line.get("stream") == "stderr")
    assert "Traceback (most recent call last)" in trace and 'File "train.py", line' in trace
    assert "stratus/runtime/" not in trace and "/bundles/" not in trace, trace  # train's frames
    _, key = jobs_server.mint_key("jobs-other", "admin")
    with jobs_server.client_as(key) as other:
        for path in ("", "/logs", "/events", "/metrics"):
            response = other.get(f"/api/jobs/{job['id']}{path}")
            assert response.status_code == 404, (path, response.text)
        assert other.get("/api/jobs").json()["jobs"] == []
        assert other.delete(f"/api/jobs/{job['id']}").status_code == 404


def test_a_job_over_its_memory_limit_fails_out_of_memory(jobs_server: StratusServer) -> None:
    job = run(jobs_server, "train.py:hog", memory_mb=256)
    view = wait_ended(jobs_server, job["id"])
    assert (view["status"], view["reason"]) == ("failed", "out_of_memory"), view
    assert "memory limit of 256 MB" in view["error"]


def test_a_cancelled_job_has_its_processes_gone(jobs_server: StratusServer) -> None:
    job = run(jobs_server, "train.py:wait")

    def child_pid() -> int | None:
        log = jobs_server.http.get(f"/api/jobs/{job['id']}/logs").text
        found = [line for line in log.splitlines() if '"child ' in line]
        return int(json.loads(found[0])["message"].split()[1]) if found else None

    child = wait_for(child_pid, 60, "the job to start its child")
    worker = jobs_server.http.get(f"/api/jobs/{job['id']}").json()["pid"]
    assert pid_alive(worker) and pid_alive(child)
    response = jobs_server.http.delete(f"/api/jobs/{job['id']}")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    wait_for(lambda: not pid_alive(worker) and not pid_alive(child), 5,
             "the job's processes to be gone")
    assert jobs_server.http.delete(f"/api/jobs/{job['id']}").status_code == 409
    assert events(jobs_server, job["id"])[-1]["type"] == "JobCancelled"


def test_bad_submissions_are_refused_with_the_reason(jobs_server: StratusServer) -> None:
    missing = submit(jobs_server, "train.py:no_such_function")
    assert missing.status_code == 400 and "no_such_function" in missing.json()["error"]["message"]
    two_args = submit(jobs_server, "train.py:MLP")
    assert two_args.status_code == 400 and "train(ctx)" in two_args.json()["error"]["message"]
    workers = submit(jobs_server, "train.py:train_mlp", workers=2)
    assert workers.status_code == 400 and "one worker" in workers.json()["error"]["message"]
    bundle = jobs_server.http.post("/api/jobs", json={
        "code": {"bundle": "0" * 64, "entrypoint": "train.py:train_mlp"}})
    assert bundle.status_code == 404 and "has not been uploaded" in bundle.text
    params = submit(jobs_server, "train.py:train_mlp", params={"lr": [1, 2]})
    assert params.status_code == 400 and "params.lr" in params.text
    assert jobs_server.http.get("/api/jobs/job-nothing").status_code == 404
    assert jobs_server.http.get("/api/jobs", params={"status": "sleeping"}).status_code == 400


def test_wrong_calls_raise_in_the_job_with_the_reason(jobs_server: StratusServer) -> None:
    job = run(jobs_server, "train.py:misuse")
    view = wait_ended(jobs_server, job["id"])
    assert view["status"] == "succeeded", view
    assert view["params"] == {
        "nan": "ValueError: metric 'x' is nan: only finite numbers are recorded",
        "long_name": f"ValueError: a metric name is a non-empty string of at most 63 characters, "
                     f"not {'y' * 64!r}",
        "list_param": "TypeError: parameter 'bad' must be a string, number, bool or None, not list",
        "model": "TypeError: save_model takes a torch nn.Module or a scikit-learn estimator, not "
                 "object",
        "dataset": "LookupError: dataset 'nothing@1' was not declared by this job (declared: "
                   "none); submit it with --dataset nothing@1",
        "step": "TypeError: step must be an int, not float",
    }
    assert view["metrics"] == {}


def test_an_invoker_cannot_submit_a_job(jobs_server: StratusServer) -> None:
    _, key = jobs_server.mint_key("default", "invoker")
    with jobs_server.client_as(key) as invoker:
        response = submit(jobs_server, "train.py:train_mlp", http=invoker)
        assert response.status_code == 403, response.text


def test_checkpoints_are_loaded_back_and_a_resumed_job_starts_from_them(
        jobs_server: StratusServer) -> None:
    first = run(jobs_server, "train.py:resume")
    view = wait_ended(jobs_server, first["id"])
    assert view["status"] == "succeeded", (view, jobs_server.http.get(
        f"/api/jobs/{first['id']}/logs").text)
    assert view["metrics"] == {"count": 1.0} and view["checkpoints"] == 1
    second = run(jobs_server, "train.py:resume", resume_from=first["id"])
    third = run(jobs_server, "train.py:resume", resume_from=second["id"])
    for job, count, attempt in ((second, 2.0, 2), (third, 3.0, 3)):
        view = wait_ended(jobs_server, job["id"])
        assert (view["status"], view["metrics"], view["attempts"]) == (
            "succeeded", {"count": count}, attempt), view
    unknown = submit(jobs_server, "train.py:resume", resume_from="job-nothing")
    assert unknown.status_code == 404


def test_a_job_running_when_the_server_is_killed_is_failed_on_restart_and_can_resume(
        tmp_path: Path) -> None:
    server = StratusServer(tmp_path / "data", TEST_ENV)
    server.start()
    try:
        job = run(server, "train.py:steps", params={"steps": 100_000})
        checkpointed = wait_for(lambda: [e for e in events(server, job["id"])
                                         if e["type"] == "CheckpointSaved"], 60,
                                "the job's first checkpoint")
        worker = server.http.get(f"/api/jobs/{job['id']}").json()["pid"]
        server.stop(signal.SIGKILL)
        wait_for(lambda: not pid_alive(worker), 10, "the orphaned worker to end")
        server.start()
        view = server.http.get(f"/api/jobs/{job['id']}").json()
        assert (view["status"], view["reason"]) == ("failed", "server_restart"), view
        saved = [e for e in events(server, job["id"]) if e["type"] == "CheckpointSaved"]
        assert saved[0] == checkpointed[0]
        resumed = run(server, "train.py:steps", params={"steps": saved[-1]["data"]["step"] + 2},
                      resume_from=job["id"])
        view = wait_ended(server, resumed["id"])
        assert view["status"] == "succeeded", view
        assert view["metrics"]["resumed_at"] == saved[-1]["data"]["step"]
        assert view["metrics"]["step"] == saved[-1]["data"]["step"] + 2
        stray = b"referenced by nothing"
        stray_digest = hashlib.sha256(stray).hexdigest()
        assert server.http.put(f"/api/blobs/{stray_digest}", content=stray).status_code == 201
        collected = server.http.post("/api/gc", json={"grace_s": 0})
        assert collected.status_code == 200, collected.text
        bundle = view["spec"]["code"]["bundle"]
        for digest in (bundle, *(e["data"]["digest"] for e in saved)):
            assert server.http.head(f"/api/blobs/{digest}").status_code == 200, digest
        assert server.http.head(f"/api/blobs/{stray_digest}").status_code == 404
    finally:
        server.stop()


def test_jobs_beyond_max_running_wait_in_order(jobs_server: StratusServer) -> None:
    first = run(jobs_server, "train.py:wait")
    second = run(jobs_server, "train.py:train_sklearn")
    third = run(jobs_server, "train.py:train_sklearn")
    wait_for(lambda: jobs_server.http.get(f"/api/jobs/{first['id']}").json()["status"]
             == "running", 60, "the first job to run")
    views = [jobs_server.http.get(f"/api/jobs/{job['id']}").json() for job in (second, third)]
    assert [(v["status"], v["queue_position"]) for v in views] == [("queued", 1), ("queued", 2)]
    cancelled = jobs_server.http.delete(f"/api/jobs/{third['id']}").json()
    assert cancelled["status"] == "cancelled"
    assert [e["type"] for e in events(jobs_server, third["id"])] == ["JobSubmitted",
                                                                     "JobCancelled"]
    jobs_server.http.delete(f"/api/jobs/{first['id']}")
    assert wait_ended(jobs_server, second["id"])["status"] == "succeeded"


def test_a_job_past_its_timeout_is_stopped(jobs_server: StratusServer) -> None:
    job = run(jobs_server, "train.py:wait", timeout_s=1.5)
    view = wait_ended(jobs_server, job["id"])
    assert (view["status"], view["reason"]) == ("failed", "timeout"), view
    assert view["error"] == "the job ran past its timeout of 1.5s"
    assert view["metrics"]["heartbeat"] >= 1


def test_jobs_are_metered_on_a_cost_line_of_their_own(jobs_server: StratusServer) -> None:
    before = jobs_server.http.get("/api/usage", params={"since": "1h"}).json()["jobs"]
    job = run(jobs_server, "train.py:train_sklearn", memory_mb=512)
    assert wait_ended(jobs_server, job["id"])["status"] == "succeeded"

    def metered() -> dict[str, Any] | None:
        jobs = jobs_server.http.get("/api/usage", params={"since": "1h"}).json()["jobs"]
        return jobs if jobs["runs"] > before["runs"] else None

    after = wait_for(metered, 30, "the job's usage record")
    assert after["jobs"] == before["jobs"] + 1
    assert after["gb_seconds"] - before["gb_seconds"] > 0
    assert after["cpu_seconds"] > before["cpu_seconds"]
    assert after["cost"]["total"] > before["cost"]["total"]
    printed = jobs_server.cli("cost", "--since", "1h").stdout
    assert f"jobs: {after['jobs']} run(s)" in printed and "GB-s" in printed


def test_the_cli_runs_follows_compares_and_detaches(jobs_server: StratusServer) -> None:
    target = str(APPS / "jobs" / "train.py")
    done = jobs_server.cli("jobs", "run", f"{target}:train_mlp", "--param", "epochs=3",
                           "--param", "lr=0.1", "--experiment", "cli", "--follow")
    assert "3/3" in done.stderr and "succeeded" in done.stderr, done.stderr
    assert "first line of train_mlp" in done.stderr
    failed = jobs_server.cli("jobs", "run", f"{target}:fail", "--param", "lr=-2",
                             "--experiment", "cli", "-f", check=False)
    assert failed.returncode == 1  # rich wraps lines in a narrow (non-)terminal
    assert "must be positive, not -2" in " ".join(failed.stderr.split()), failed.stderr
    runs = jobs_server.http.get("/api/jobs", params={"experiment": "cli"}).json()["jobs"]
    assert [run["status"] for run in runs] == ["failed", "succeeded"]
    compared = jobs_server.cli("runs", "compare", runs[1]["id"], runs[0]["id"]).stdout
    assert "param lr" in compared and "metric loss" in compared and "-2" in compared
    printed = jobs_server.cli("jobs", "events", runs[1]["id"]).stdout
    assert "JobSubmitted" in printed and "JobCompleted" in printed
    listed = jobs_server.cli("jobs", "ls", "--experiment", "cli").stdout
    assert runs[0]["id"] in listed and runs[1]["id"] in listed
    follower = subprocess.Popen([STRATUS, "jobs", "run", f"{target}:wait", "-f"],
                                env=jobs_server.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    try:
        waiting = wait_for(lambda: jobs_server.http.get(
            "/api/jobs", params={"status": "running"}).json()["jobs"], 60, "the job to run")
        follower.send_signal(signal.SIGINT)
        output, _ = follower.communicate(timeout=30)
        assert follower.returncode == 0 and "detached" in output, output
        assert jobs_server.http.get(f"/api/jobs/{waiting[0]['id']}").json()["status"] == "running"
    finally:
        follower.kill()
    jobs_server.cli("jobs", "cancel", waiting[0]["id"])


def push_iris(server: StratusServer, directory: Path, name: str,
              namespace: str = "default") -> None:
    """scikit-learn's bundled iris as a CSV dataset, split 80/20."""
    iris = load_iris(as_frame=True)
    frame = iris.data.set_axis(["sepal_length", "sepal_width", "petal_length", "petal_width"],
                               axis=1)
    frame["species"] = [str(iris.target_names[t]) for t in iris.target]
    path = directory / "iris.csv"
    frame.to_csv(path, index=False)
    server.cli("datasets", "push", name, str(path), "--version", "1",
               "--split", "train=0.8,test=0.2", "--seed", "7", "--namespace", namespace)


def test_a_job_trains_on_a_dataset_split_with_training_statistics(
        jobs_server: StratusServer, tmp_path: Path) -> None:
    push_iris(jobs_server, tmp_path, "iris-jobs")
    job = run(jobs_server, "train.py:fit_dataset", datasets=["iris-jobs@1"],
              params={"dataset": "iris-jobs@1", "epochs": 3})
    view = wait_ended(jobs_server, job["id"])
    assert view["status"] == "succeeded", (view, jobs_server.http.get(
        f"/api/jobs/{job['id']}/logs").text)
    assert (view["params"]["train_rows"], view["params"]["test_rows"]) == (120, 30)
    assert view["metrics"]["test_accuracy"] > 0.8 and view["epoch"] == 3
    model = view["model"]
    assert model["meta"]["datasets"] == ["iris-jobs@1"] and model["meta"]["job"] == job["id"]
    stats = model["preprocessing"]["standardize"]
    assert set(stats) == {"sepal_length", "sepal_width", "petal_length", "petal_width"}
    assert view["spec"]["resolved_datasets"] == [
        {"ref": "iris-jobs@1", "name": "iris-jobs", "version": "1"}]
    split = run(jobs_server, "train.py:bad_split", datasets=["iris-jobs"],
                params={"dataset": "iris-jobs"})
    failed = wait_ended(jobs_server, split["id"])
    assert (failed["status"], failed["reason"]) == ("failed", "error")
    assert "validation" in failed["error"], failed
    unknown = submit(jobs_server, "train.py:fit_dataset", datasets=["nothing@1"])
    assert unknown.status_code == 404 and "nothing" in unknown.json()["error"]["message"]
