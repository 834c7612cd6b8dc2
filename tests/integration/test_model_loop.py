"""The whole loop on a real server: a CSV dataset, training jobs (scikit-learn and a torch MLP),
evaluation, a gate against production, registration, a canary rollout, invocations, and the
lineage from the deployed revision back to the dataset version and the job."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from test_jobs import ENDED, events, push_iris

from server import TEST_ENV, StratusServer, wait_for

ROWS = [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2},
        {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3}]


@pytest.fixture(scope="module")
def loop_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StratusServer]:
    instance = StratusServer(tmp_path_factory.mktemp("loop"), TEST_ENV)
    instance.start()
    yield instance
    instance.stop()


def job(server: StratusServer, entrypoint: str, **fields: Any) -> dict[str, Any]:
    digest = server.upload("lifecycle")
    response = server.http.post("/api/jobs", json={
        "code": {"bundle": digest, "entrypoint": entrypoint}, **fields})
    assert response.status_code == 201, response.text
    return ended(server, response.json()["id"])


def ended(server: StratusServer, job_id: str) -> dict[str, Any]:
    """The job once it ended and what follows (gate, registration, rollout) was recorded."""
    def settled() -> dict[str, Any] | None:
        view: dict[str, Any] = server.http.get(f"/api/jobs/{job_id}").json()
        if view["status"] not in ENDED:
            return None
        register = (view["spec"] or {}).get("register")
        if view["status"] == "succeeded" and register and view["gate"] is None:
            return None
        if register and view["gate"] and view["gate"]["passed"] and view["model_version"] is None:
            return None  # judged, not registered yet (a failed registration judges again)
        if register and (register.get("deploy") and view["gate"]["passed"]
                         and view["rollout"] is None):
            return None
        return view
    return wait_for(settled, 180, f"job {job_id} and its promotion", interval=0.1)


def register(name: str = "iris", **fields: Any) -> dict[str, Any]:
    return {"name": name, **fields}


@pytest.fixture(scope="module")
def iris(loop_server: StratusServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    push_iris(loop_server, tmp_path_factory.mktemp("iris"), "iris")
    return "iris@1"


def test_train_gate_register_canary_serve_and_trace_the_lineage(
        loop_server: StratusServer, iris: str) -> None:
    http = loop_server.http
    # 1. A scikit-learn model, evaluated on the training split only, becomes production.
    first = job(loop_server, "train.py:train_sklearn", datasets=[iris],
                params={"dataset": iris}, experiment="iris",
                register=register(split="train", gate=["accuracy>=0.8"]))
    assert first["status"] == "succeeded", first
    assert first["gate"]["passed"] is True and first["model_version"] == "1.0.0"
    assert first["evaluation"]["split"] == "train"
    assert set(first["evaluation"]["metrics"]) >= {"accuracy", "precision_macro",
                                                   "recall_macro", "f1_macro"}
    promoted = http.post("/api/models/iris/versions/1.0.0/promote", json={"stage": "production"})
    assert promoted.status_code == 200, promoted.text
    loop_server.deploy("lifecycle", "serve.py:Iris", name="iris-svc", models=["iris@production"],
                       min_replicas=1, ready=1)
    served = loop_server.invoke("iris-svc", {"rows": ROWS})
    assert served.status_code == 200, served.text
    assert served.json() == {"predictions": ["setosa", "virginica"], "version": "1.0.0"}

    # 2. A torch MLP, gated against production on the test split: production's evaluation on
    # that split does not exist yet, so an evaluation job makes it first.
    second = job(loop_server, "train.py:train_mlp", datasets=[iris],
                 params={"dataset": iris, "epochs": 20, "hidden": 12}, experiment="iris",
                 register=register(gate=["accuracy>=0.8"], gate_vs="production", tolerance=0.1,
                                   deploy={"deployment": "iris-svc", "canary": 10}))
    assert second["status"] == "succeeded", second
    gate = second["gate"]
    assert gate["passed"] is True, gate
    assert gate["baseline"]["version"] == "1.0.0" and gate["baseline"]["job"] != second["id"]
    baseline_job = http.get(f"/api/jobs/{gate['baseline']['job']}").json()
    assert baseline_job["evaluation"]["model"] == "iris@1.0.0"
    assert second["model_version"] == "1.1.0"
    assert second["rollout"]["deployment"] == "iris-svc" and second["rollout"]["canary"] == 10
    kinds = [event["type"] for event in events(loop_server, second["id"])]
    assert kinds[-6:] == ["ModelSaved", "EvaluationCompleted", "JobCompleted", "GateJudged",
                          "ModelRegistered", "RolloutStarted"]
    production = http.get("/api/models/iris/versions/1.0.0").json()
    assert {(e["dataset"], e["split"]) for e in production["evaluations"]} == {
        ("iris@1", "train"), ("iris@1", "test")}

    # 3. The canary serves the new version; the lineage leads back to the dataset and job.
    revision = second["rollout"]["revision"]
    deployment = http.get("/api/deployments/iris-svc").json()
    assert deployment["revision"] == revision
    assert deployment["models"] == [{"ref": "iris@1.1.0", "version": "1.1.0",
                                     "format": "safetensors"}]
    canary = wait_for(lambda: (r := loop_server.invoke(
        "iris-svc", {"rows": ROWS}, headers={"x-stratus-revision": str(revision)})
    ).status_code == 200 and r, 120, "the canary revision to serve")
    assert canary.json() == {"predictions": ["setosa", "virginica"], "version": "1.1.0"}
    version = http.get("/api/models/iris/versions/1.1.0").json()
    lineage = version["lineage"]
    assert lineage == {"dataset": "iris@1", "job": second["id"], "parent": "1.0.0"}
    trained = http.get(f"/api/jobs/{lineage['job']}").json()
    assert trained["spec"]["resolved_datasets"] == [
        {"ref": "iris@1", "name": "iris", "version": "1"}]
    assert version["preprocessing"] == second["model"]["preprocessing"]


def test_a_model_below_its_gate_is_not_registered(loop_server: StratusServer, iris: str) -> None:
    before = loop_server.http.get("/api/models").json()
    weak = job(loop_server, "train.py:train_weak", datasets=[iris], params={"dataset": iris},
               register=register("iris-weak", gate=["accuracy>=0.9"]))
    assert weak["status"] == "succeeded" and weak["gate"]["passed"] is False
    assert "accuracy" in " ".join(weak["gate"]["reasons"])
    assert weak["model_version"] is None
    assert loop_server.http.get("/api/models/iris-weak").status_code == 404
    assert loop_server.http.get("/api/models").json() == before


def test_evaluating_a_version_records_its_metrics_on_it(loop_server: StratusServer,
                                                        iris: str) -> None:
    made = job(loop_server, "train.py:train_sklearn", datasets=[iris], params={"dataset": iris},
               register=register("iris-eval", split="train"))
    assert made["model_version"] == "1.0.0", made
    output = loop_server.cli("jobs", "evaluate", "iris-eval@1.0.0", "--dataset", iris,
                             "--split", "test", "--follow").stdout
    assert "accuracy" in output and "30 rows" in output
    recorded = loop_server.http.get("/api/models/iris-eval/versions/1.0.0").json()
    test_split = [e for e in recorded["evaluations"] if e["split"] == "test"]
    assert len(test_split) == 1 and test_split[0]["samples"] == 30
    report = test_split[0]["report"]
    assert sum(map(sum, report["confusion_matrix"]["matrix"])) == 30
    assert set(report["per_class"]) == {"setosa", "versicolor", "virginica"}


@pytest.mark.parametrize(("fields", "status", "words"), [
    ({"register": register(gate=["accuracy>>0.9"])}, 400, "position"),
    ({"register": register(gate=["accurracy>=0.9"])}, 400, "accurracy"),
    ({"register": register(split="validation")}, 404, "validation"),
    ({"register": register(dataset="other@1")}, 400, "not one of the job's datasets"),
    ({"register": register(gate=["accuracy>=0.9"]), "datasets": []}, 400, "dataset"),
    ({"models": ["nothing@1.0.0"]}, 404, "nothing"),
])
def test_bad_registrations_are_refused_before_anything_runs(
        loop_server: StratusServer, iris: str, fields: dict[str, Any], status: int,
        words: str) -> None:
    digest = loop_server.upload("lifecycle")
    body = {"code": {"bundle": digest, "entrypoint": "train.py:train_sklearn"},
            "datasets": [iris], "params": {"dataset": iris}, **fields}
    response = loop_server.http.post("/api/jobs", json=body)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]["message"]


@pytest.mark.parametrize(("body", "status"), [
    ({"model": "nothing@1.0.0", "dataset": "iris@1"}, 404),
    ({"model": "iris@1.0.0", "dataset": "iris@1", "split": "validation"}, 404),
    ({"model": "iris@1.0.0", "dataset": "missing@1"}, 404),
    ({"model": "iris@1.0.0"}, 400),
])
def test_bad_evaluations_are_refused(loop_server: StratusServer, iris: str,
                                     body: dict[str, Any], status: int) -> None:
    response = loop_server.http.post("/api/jobs/evaluate", json=body)
    assert response.status_code == status, response.text


def test_an_invoker_cannot_evaluate(loop_server: StratusServer, iris: str) -> None:
    _, key = loop_server.mint_key("default", "invoker")
    with loop_server.client_as(key) as invoker:
        response = invoker.post("/api/jobs/evaluate",
                                json={"model": "iris@1.0.0", "dataset": iris})
    assert response.status_code == 403, response.text
