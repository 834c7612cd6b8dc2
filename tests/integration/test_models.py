"""The model store end to end on a real server: push, stages and promotions that roll out,
each format served, refusals (pickles, unknown models, corrupted blobs, versions in use),
garbage collection, interrupted uploads, weights shared between replicas, and the host
memory budget."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from server import APPS, StratusServer, pid_alive, wait_for
from stratus.cli.bundle import build_bundle
from stratus.store.plaincache import cache_root

APP = APPS / "modelstore" / "app.py"
TORCH = ["torch"]  # what `stratus deploy` preloads for this app: one profile zygote for all
MIB = 1 << 20


# -- helpers -------------------------------------------------------------------------------
def make_weights(path: Path, seed: int, **shapes: tuple[int, ...]) -> dict[str, float]:
    """A seeded safetensors file; returns each tensor's sum (what TensorSums answers)."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {name: torch.randn(*shape, generator=generator) for name, shape in
               (shapes or {"w": (4, 4), "b": (4,)}).items()}
    save_file(tensors, path)
    return {name: float(tensor.sum(dtype=torch.float64)) for name, tensor in tensors.items()}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def push(server: StratusServer, name: str, path: Path, version: str, *flags: str,
         check: bool = True) -> Any:
    return server.cli("models", "push", name, str(path), "--version", version, *flags, check=check)


def flat(text: str) -> str:
    """The CLI's output with rich's line wrapping undone."""
    return " ".join(text.split())


def blob_file(server: StratusServer, digest: str) -> Path:
    return server.data_dir / "artifacts" / "blobs" / "sha256" / digest[:2] / digest


def assert_sums(body: dict[str, Any], expected: dict[str, float]) -> None:
    assert body["sums"].keys() == expected.keys()
    for name, value in expected.items():
        assert body["sums"][name] == pytest.approx(value, rel=1e-5, abs=1e-4), name


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


# -- push, list, show, promote ----------------------------------------------------------------
def test_push_ls_show_promote_through_the_cli(server: StratusServer, tmp_path: Path) -> None:
    first, second = tmp_path / "first.safetensors", tmp_path / "second.safetensors"
    make_weights(first, 1)
    make_weights(second, 2)
    pushed = push(server, "reg-cli", first, "1.0.0", "--framework", "pytorch", "--task", "demo",
                  "--metric", "acc=0.91", "--param", "lr=0.01", "--tag", "team=search",
                  "--dataset", "s3://data/v1", "--job", "train-7",
                  "--signature", '{"inputs": [{"name": "x"}]}')
    assert "pushed reg-cli@1.0.0 (safetensors" in flat(pushed.stderr)
    assert "in stage dev" in flat(pushed.stderr)
    assert "uploaded first.safetensors" in flat(pushed.stderr)
    staged = push(server, "reg-cli", second, "1.1.0", "--stage", "staging", "--parent", "1.0.0")
    assert "in stage staging" in flat(staged.stderr)
    # The same bytes under a new version are not uploaded twice.
    again = push(server, "reg-cli", first, "1.2.0")
    assert "already on the server" in flat(again.stderr)

    listed = server.cli("models", "ls").stdout
    row = next(line for line in listed.splitlines() if "reg-cli" in line)
    assert "1.2.0" in row and "3" in row and "staging=1.1.0" in row

    table = server.cli("models", "show", "reg-cli").stdout
    for version, stage in (("1.0.0", "dev"), ("1.1.0", "staging"), ("1.2.0", "dev")):
        line = next(line for line in table.splitlines() if version in line)
        assert stage in line and "safetensors" in line
    assert "acc=0.91" in table

    detail = json.loads(server.cli("models", "show", "reg-cli@1.0.0").stdout)
    assert detail["version"] == "1.0.0" and detail["stage"] == "dev" and detail["format"] == "safetensors"
    assert detail["files"] == {"first.safetensors": {"sha256": sha256(first), "size": first.stat().st_size}}
    assert detail["size_bytes"] == first.stat().st_size
    assert detail["framework"] == "pytorch" and detail["task"] == "demo"
    assert detail["metrics"] == {"acc": 0.91} and detail["parameters"] == {"lr": "0.01"}
    assert detail["tags"] == {"team": "search"}
    assert detail["signature"] == {"inputs": [{"name": "x"}]}
    assert detail["lineage"] == {"dataset": "s3://data/v1", "job": "train-7", "parent": None}
    assert detail["trusted_pickle"] is False
    as_json = json.loads(server.cli("models", "show", "reg-cli", "--json").stdout)
    assert [v["version"] for v in as_json["versions"]] == ["1.0.0", "1.1.0", "1.2.0"]
    assert as_json["versions"][1]["lineage"]["parent"] == "1.0.0"

    promoted = server.cli("models", "promote", "reg-cli", "1.0.0")  # production by default
    assert "reg-cli@1.0.0 is now in production" in flat(promoted.stderr)
    server.cli("models", "promote", "reg-cli", "1.2.0", "--stage", "production")
    stages = {v["version"]: v["stage"] for v in server.http.get("/api/models/reg-cli").json()["versions"]}
    assert stages == {"1.0.0": "archived", "1.1.0": "staging", "1.2.0": "production"}
    summary = next(m for m in server.http.get("/api/models").json()["models"] if m["name"] == "reg-cli")
    assert summary["stages"] == {"staging": "1.1.0", "production": "1.2.0"}
    assert summary["latest"] == "1.2.0"


def test_push_errors_through_the_cli(server: StratusServer, tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    make_weights(path, 3)
    push(server, "reg-err", path, "1.0.0")
    duplicate = push(server, "reg-err", path, "1.0.0", check=False)
    assert duplicate.returncode == 1
    assert "conflict (409)" in flat(duplicate.stderr) and "versions are immutable" in flat(duplicate.stderr)
    bad_version = push(server, "reg-err", path, "1.0", check=False)
    assert bad_version.returncode == 1 and "MAJOR.MINOR.PATCH" in flat(bad_version.stderr)
    bad_name = push(server, "Reg_Err", path, "1.0.0", check=False)
    assert bad_name.returncode == 1 and "lowercase" in flat(bad_name.stderr)
    missing = server.cli("models", "promote", "reg-err", "9.9.9", check=False)
    assert missing.returncode == 1 and "has no version 9.9.9" in flat(missing.stderr)
    bad_stage = server.cli("models", "promote", "reg-err", "1.0.0", "--stage", "prod", check=False)
    assert bad_stage.returncode == 1
    assert "not one of dev, staging, production, archived" in flat(bad_stage.stderr)
    not_model = tmp_path / "notes.txt"
    not_model.write_text("hello")
    unsupported = push(server, "reg-err", not_model, "2.0.0", check=False)
    assert unsupported.returncode == 1 and "unsupported model file" in flat(unsupported.stderr)


def test_push_refuses_files_that_were_not_uploaded(server: StratusServer) -> None:
    body = {"version": "1.0.0", "format": "safetensors",
            "files": {"w.safetensors": {"sha256": "0" * 64, "size": 10}}}
    response = server.http.post("/api/models/reg-ghost/versions", json=body)
    assert response.status_code == 404
    assert "has not been uploaded" in error_of(response)["message"]
    escape = {**body, "files": {"../../etc/passwd": {"sha256": "0" * 64, "size": 10}}}
    response = server.http.post("/api/models/reg-ghost/versions", json=escape)
    assert response.status_code == 400 and "stay inside the model" in error_of(response)["message"]
    assert server.http.get("/api/models/reg-ghost").status_code == 404


# -- deployments follow stages, pins do not move -------------------------------------------
def test_promotion_rolls_out_to_followers_and_pins_stay(server: StratusServer, tmp_path: Path) -> None:
    path_a, path_b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    sums_a = make_weights(path_a, 10)
    sums_b = make_weights(path_b, 11)
    assert sums_a != sums_b
    push(server, "follow", path_a, "1.0.0", "--stage", "production")
    push(server, "follow", path_b, "2.0.0")

    # Rollouts that follow the stage take the deployment's short watch.
    deployed = server.cli("deploy", f"{APP}:TensorSums", "--name", "follow-prod", "--model",
                          "follow@production", "--env", "MODEL=follow", "--min-replicas", "1",
                          "--watch", "1s")
    assert "revision 1" in flat(deployed.stderr) and "ready" in flat(deployed.stderr)
    server.deploy("modelstore", "app.py:TensorSums", name="follow-pin", models=["follow@1.0.0"],
                  config={"model": "follow"}, min_replicas=1, preload=TORCH, ready=1)
    assert server.status("follow-prod")["models"] == [
        {"ref": "follow@production", "version": "1.0.0", "format": "safetensors"}]
    for name in ("follow-prod", "follow-pin"):
        response = server.invoke(name)
        assert response.status_code == 200, response.text
        assert response.headers["x-stratus-revision"] == "1"
        assert response.json()["version"] == "1.0.0"
        assert_sums(response.json(), sums_a)
        assert response.json()["zero_copy"] is True

    promoted = server.cli("models", "promote", "follow", "2.0.0", "--stage", "production")
    assert "rolling out to follow-prod" in flat(promoted.stderr)
    assert "follow-pin" not in flat(promoted.stderr)
    stages = {v["version"]: v["stage"] for v in server.http.get("/api/models/follow").json()["versions"]}
    assert stages == {"1.0.0": "archived", "2.0.0": "production"}

    def rolled_out() -> bool:
        view = server.status("follow-prod")
        return view["revision"] == 2 and view["serving_revision"] == 2 and view["replicas"]["ready"] >= 1 \
            and all(item["revision"] == 2 for item in view["replicas"]["items"])

    wait_for(rolled_out, 60, "follow-prod to roll out revision 2")
    response = server.invoke("follow-prod")
    assert response.status_code == 200 and response.headers["x-stratus-revision"] == "2"
    assert response.json()["version"] == "2.0.0" and response.json()["revision"] == 2
    assert_sums(response.json(), sums_b)
    assert server.status("follow-prod")["models"] == [
        {"ref": "follow@production", "version": "2.0.0", "format": "safetensors"}]
    revisions = server.http.get("/api/deployments/follow-prod/revisions").json()["revisions"]
    assert [r["revision"] for r in revisions] == [1, 2]

    # The pinned deployment did not move, although 1.0.0 is archived now.
    pinned = server.status("follow-pin")
    assert pinned["revision"] == 1 and pinned["serving_revision"] == 1
    response = server.invoke("follow-pin")
    assert response.headers["x-stratus-revision"] == "1" and response.json()["version"] == "1.0.0"
    assert_sums(response.json(), sums_a)

    # Promoting the version that already holds the stage changes nothing.
    again = server.http.post("/api/models/follow/versions/2.0.0/promote", json={"stage": "production"})
    assert again.status_code == 200 and again.json()["deployments_updated"] == []
    assert server.status("follow-prod")["revision"] == 2
    # Rolling back: promoting 1.0.0 again is one more revision, serving A.
    back = server.http.post("/api/models/follow/versions/1.0.0/promote", json={"stage": "production"})
    assert back.json()["deployments_updated"] == ["follow-prod"]
    wait_for(lambda: server.status("follow-prod")["serving_revision"] == 3, 60, "the rollback")
    assert_sums(server.invoke("follow-prod").json(), sums_a)
    for name in ("follow-prod", "follow-pin"):
        server.delete(name)


def test_pushing_straight_into_production_rolls_out_to_followers(server: StratusServer,
                                                                 tmp_path: Path) -> None:
    path_a, path_b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    make_weights(path_a, 12)
    sums_b = make_weights(path_b, 13)
    push(server, "follow-push", path_a, "1.0.0", "--stage", "production")
    server.deploy("modelstore", "app.py:TensorSums", name="follow-push", models=["follow-push@production"],
                  config={"model": "follow-push"}, preload=TORCH)
    try:
        push(server, "follow-push", path_b, "2.0.0", "--stage", "production")
        stages = {v["version"]: v["stage"]
                  for v in server.http.get("/api/models/follow-push").json()["versions"]}
        assert stages == {"1.0.0": "archived", "2.0.0": "production"}
        wait_for(lambda: server.status("follow-push")["revision"] == 2, 5,
                 "the follower to get a revision with 2.0.0")
        assert_sums(server.invoke("follow-push").json(), sums_b)
    finally:
        server.delete("follow-push")


def test_a_patch_can_change_the_models_and_refuses_unknown_ones(server: StratusServer,
                                                               tmp_path: Path) -> None:
    path_a, path_b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    sums_a = make_weights(path_a, 14)
    sums_b = make_weights(path_b, 15)
    push(server, "patched", path_a, "1.0.0")
    push(server, "patched", path_b, "1.1.0")
    server.deploy("modelstore", "app.py:TensorSums", name="patched", models=["patched@1.0.0"],
                  config={"model": "patched"}, preload=TORCH)
    assert_sums(server.invoke("patched").json(), sums_a)
    refused = server.http.patch("/api/deployments/patched", json={"models": ["patched@7.0.0"]})
    assert refused.status_code == 400 and "has no version 7.0.0" in error_of(refused)["message"]
    assert server.status("patched")["revision"] == 1
    changed = server.http.patch("/api/deployments/patched", json={"models": ["patched@1.1.0"]})
    assert changed.status_code == 200 and changed.json()["revision"] == 2
    wait_for(lambda: server.status("patched")["serving_revision"] == 2, 30, "revision 2 to serve")
    response = server.invoke("patched")
    assert response.headers["x-stratus-revision"] == "2"
    assert_sums(response.json(), sums_b)
    server.delete("patched")


def test_unknown_models_and_versions_are_refused_at_deploy(server: StratusServer, tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    make_weights(path, 20)
    push(server, "known", path, "1.0.0")
    cases = {
        "nope-model@1.0.0": "model 'nope-model' not found",
        "nope-model": "model 'nope-model' not found",
        "known@9.9.9": "model 'known' has no version 9.9.9",
        "known@staging": "model 'known' has no version in stage staging",
    }
    for ref, message in cases.items():
        response = server.deploy_raw("modelstore", "app.py:TensorSums", name="unknown-model",
                                     models=[ref], preload=TORCH)
        assert response.status_code == 400, (ref, response.text)
        error = error_of(response)
        assert error["type"] == "deploy_error" and message in error["message"], (ref, error)
    for ref in ("known@latest", "Known@1.0.0"):
        response = server.deploy_raw("modelstore", "app.py:TensorSums", name="unknown-model",
                                     models=[ref], preload=TORCH)
        assert response.status_code == 400, (ref, response.text)
        assert ref in error_of(response)["message"] or "lowercase" in error_of(response)["message"]
    twice = server.deploy_raw("modelstore", "app.py:TensorSums", name="unknown-model",
                              models=["known@1.0.0", "known"], preload=TORCH)
    assert twice.status_code == 400 and "referenced twice" in error_of(twice)["message"]
    failed = server.cli("deploy", f"{APP}:TensorSums", "--name", "unknown-model", "--model",
                        "nope-model@1.0.0", check=False)
    assert failed.returncode == 1
    assert "nope-model" in flat(failed.stderr) and "deploy_error (400)" in flat(failed.stderr)
    assert server.http.get("/api/deployments/unknown-model").status_code == 404


def test_a_model_the_deployment_does_not_declare_is_a_clear_init_error(server: StratusServer,
                                                                       tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    make_weights(path, 21)
    push(server, "declared", path, "1.0.0")
    server.deploy("modelstore", "app.py:TensorSums", name="undeclared", models=["declared@1.0.0"],
                  config={"model": "other"}, preload=TORCH)
    response = server.invoke("undeclared")
    assert response.status_code == 503
    message = error_of(response)["message"]
    assert "model 'other' is not declared by this deployment" in message
    assert "declared@1.0.0" in message
    server.delete("undeclared")


# -- a corrupted blob ------------------------------------------------------------------
def _corrupt(path: Path) -> None:
    """Flip bytes in the middle of the tensor data, keeping the size (bit rot)."""
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.seek(size // 2)
        data = handle.read(64)
        handle.seek(size // 2)
        handle.write(bytes(b ^ 0xFF for b in data))
    assert path.stat().st_size == size


def test_a_corrupted_blob_is_detected_when_a_replica_loads_it(server: StratusServer, tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    make_weights(path, 30, w=(256, 256))
    push(server, "corrupt-m", path, "1.0.0")
    server.deploy("modelstore", "app.py:TensorSums", name="corrupt-d", models=["corrupt-m@1.0.0"],
                  config={"model": "corrupt-m"}, min_replicas=0, preload=TORCH)
    blob = blob_file(server, sha256(path))
    assert blob.is_file()
    _corrupt(blob)

    response = server.invoke("corrupt-d")
    assert response.status_code == 503, response.text
    error = error_of(response)
    assert error["type"] == "deployment_failed"
    assert "corrupt-m@1.0.0 (w.safetensors) is corrupted" in error["message"], error
    assert f"blob {sha256(path)[:12]}" in error["message"]
    assert "retry-after" in response.headers
    view = server.status("corrupt-d")
    assert view["status"] == "failed" and "is corrupted" in view["reason"]
    # A new deployment of it is refused up front.
    refused = server.deploy_raw("modelstore", "app.py:TensorSums", name="corrupt-d2",
                                models=["corrupt-m@1.0.0"], preload=TORCH)
    assert refused.status_code == 400 and "is corrupted" in error_of(refused)["message"]
    server.delete("corrupt-d")


def test_pushing_again_repairs_a_corrupted_blob(server: StratusServer, tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    make_weights(path, 31, w=(64, 64))
    push(server, "repair-m", path, "1.0.0")
    _corrupt(blob_file(server, sha256(path)))
    again = push(server, "repair-m", path, "1.0.1", check=False)
    assert again.returncode == 0, flat(again.stderr)
    assert server.http.head(f"/api/blobs/{sha256(path)}").status_code == 200
    assert path.read_bytes()[-4096:] not in blob_file(server, sha256(path)).read_bytes(), "sealed"


# -- each format ---------------------------------------------------------------------------
def test_safetensors_served_as_a_dict_of_mapped_tensors(server: StratusServer, tmp_path: Path) -> None:
    directory = tmp_path / "shards"
    directory.mkdir()
    sums = make_weights(directory / "part-1.safetensors", 40, a=(8, 8), b=(3,))
    sums |= make_weights(directory / "part-2.safetensors", 41, c=(2, 5))
    push(server, "fmt-st", directory, "1.0.0")
    server.deploy("modelstore", "app.py:TensorSums", name="fmt-st", models=["fmt-st@1.0.0"],
                  config={"model": "fmt-st"}, preload=TORCH)
    response = server.invoke("fmt-st")
    assert response.status_code == 200, response.text
    body = response.json()
    assert_sums(body, sums)
    assert body["format"] == "safetensors" and body["zero_copy"] is True
    assert body["files"] == ["part-1.safetensors", "part-2.safetensors"]
    server.delete("fmt-st")


def test_safetensors_into_a_module_defined_by_the_handler(server: StratusServer, tmp_path: Path) -> None:
    torch.manual_seed(5)
    reference = torch.nn.Sequential()
    reference.hidden = torch.nn.Linear(4, 8)
    reference.out = torch.nn.Linear(8, 2)
    state = {k: v.detach().clone() for k, v in reference.state_dict().items()}
    path = tmp_path / "net.safetensors"
    save_file(state, path)
    x = [[0.5, -1.0, 2.0, 0.25], [1.0, 1.0, 1.0, 1.0]]
    with torch.inference_mode():
        hidden = torch.relu(torch.tensor(x) @ state["hidden.weight"].T + state["hidden.bias"])
        expected = (hidden @ state["out.weight"].T + state["out.bias"]).tolist()
    push(server, "fmt-module", path, "1.0.0")
    server.deploy("modelstore", "app.py:ModuleNet", name="fmt-module", models=["fmt-module@1.0.0"],
                  config={"model": "fmt-module"}, preload=TORCH)
    response = server.invoke("fmt-module", {"x": x})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "TinyNet" and body["devices"] == ["cpu"]
    assert body["zero_copy"] is True, "the module's parameters must be the mapped tensors"
    assert np.allclose(body["y"], expected, atol=1e-5)

    # Weights that do not fit the module: a clear init error, not garbage.
    wrong = tmp_path / "wrong.safetensors"
    save_file({**state, "extra.weight": torch.ones(1)}, wrong)
    push(server, "fmt-module", wrong, "2.0.0")
    server.deploy("modelstore", "app.py:ModuleNet", name="fmt-module", models=["fmt-module@2.0.0"],
                  config={"model": "fmt-module"}, preload=TORCH)
    failed = server.invoke("fmt-module", {"x": x})
    assert failed.status_code in (200, 503)
    if failed.status_code == 200:  # served by revision 1 while revision 2 failed to start
        assert failed.headers["x-stratus-revision"] == "1"
    wait_for(lambda: server.status("fmt-module")["status"] == "failed", 30, "revision 2 to fail")
    reason = server.status("fmt-module")["reason"]
    assert "the weights do not fit TinyNet" in reason and "extra.weight" in reason
    server.delete("fmt-module")


def test_a_pt_state_dict_is_converted_on_push_and_served(server: StratusServer, tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(50)
    state = {"layer.weight": torch.randn(6, 3, generator=generator),
             "layer.bias": torch.randn(6, generator=generator),
             "steps": torch.arange(5, dtype=torch.int64)}
    path = tmp_path / "checkpoint.pt"
    torch.save(state, path)
    pushed = push(server, "fmt-pt", path, "1.0.0")
    assert "pushed fmt-pt@1.0.0 (safetensors" in flat(pushed.stderr)
    detail = json.loads(server.cli("models", "show", "fmt-pt@1.0.0").stdout)
    assert detail["format"] == "safetensors" and detail["source_format"] == "pytorch"
    assert list(detail["files"]) == ["checkpoint.safetensors"]
    server.deploy("modelstore", "app.py:TensorSums", name="fmt-pt", models=["fmt-pt@1.0.0"],
                  config={"model": "fmt-pt"}, preload=TORCH)
    body = server.invoke("fmt-pt").json()
    assert_sums(body, {name: float(t.sum(dtype=torch.float64)) for name, t in state.items()})
    assert body["meta"]["source_format"] == "pytorch" and body["zero_copy"] is True
    server.delete("fmt-pt")

    module = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), module)  # a pickled module, not a state dict
    refused = push(server, "fmt-pt", module, "2.0.0", check=False)
    assert refused.returncode == 1 and "weights_only=True" in flat(refused.stderr)


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int], list[float]]:
    """A 2-layer GPT-2 with random weights, saved with save_pretrained: no download."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        import transformers

        torch.manual_seed(0)
        config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=32,
                                         bos_token_id=0, eos_token_id=0)
        model = transformers.GPT2LMHeadModel(config).eval()
        directory = tmp_path_factory.mktemp("tiny-gpt2")
        model.save_pretrained(directory)
        tokens = [1, 5, 9, 2]
        with torch.inference_mode():
            logits = model(torch.tensor([tokens])).logits[0, -1, :5].tolist()
    return directory, tokens, logits


def test_a_transformers_model_loads_and_runs(server: StratusServer, tiny_gpt2: tuple[Path, list[int],
                                                                                     list[float]]) -> None:
    directory, tokens, expected = tiny_gpt2
    pushed = push(server, "fmt-hf", directory, "1.0.0")
    assert "(transformers" in flat(pushed.stderr)
    server.deploy("modelstore", "app.py:HFModel", name="fmt-hf", models=["fmt-hf@1.0.0"],
                  config={"model": "fmt-hf"}, env={"HF_HUB_OFFLINE": "1"}, preload=TORCH)
    response = server.invoke("fmt-hf", {"input_ids": [tokens]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["class"] == "GPT2LMHeadModel" and body["training"] is False
    assert {"config.json", "model.safetensors"} <= set(body["files"])
    assert np.allclose(body["logits"], expected, atol=1e-4)
    server.delete("fmt-hf")


def test_a_transformers_directory_without_safetensors_is_refused(server: StratusServer,
                                                                 tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    torch.save({"w": torch.ones(2)}, tmp_path / "pytorch_model.bin")
    refused = push(server, "fmt-hf-bin", tmp_path, "1.0.0", check=False)
    assert refused.returncode == 1 and "safe_serialization=True" in flat(refused.stderr)


def test_an_onnx_model_is_served_with_onnxruntime(server: StratusServer, tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["doubled"]),
         helper.make_node("Add", ["doubled", "one"], ["y"])],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
         helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(proto)
    path = tmp_path / "affine.onnx"
    onnx.save(proto, str(path))
    assert "(onnx" in flat(push(server, "fmt-onnx", path, "1.0.0").stderr)
    server.deploy("modelstore", "app.py:OnnxModel", name="fmt-onnx", models=["fmt-onnx@1.0.0"],
                  config={"model": "fmt-onnx"})
    x = [[0.0, 1.0, 2.5], [-1.0, 10.0, 0.5]]
    response = server.invoke("fmt-onnx", {"x": x})
    assert response.status_code == 200, response.text
    assert response.json()["class"] == "InferenceSession"
    assert np.allclose(response.json()["y"], np.asarray(x) * 2 + 1)
    server.delete("fmt-onnx")


def _sklearn_model(tmp_path: Path) -> tuple[Path, list[list[float]], list[int]]:
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    x, y = make_classification(n_samples=80, n_features=4, random_state=0)
    model = LogisticRegression().fit(x, y)
    path = tmp_path / "classifier.pkl"
    path.write_bytes(pickle.dumps(model))
    probe = x[:6].tolist()
    return path, probe, model.predict(x[:6]).tolist()


def test_a_trusted_pickle_is_served(server: StratusServer, tmp_path: Path) -> None:
    path, probe, expected = _sklearn_model(tmp_path)
    pushed = push(server, "fmt-pkl", path, "1.0.0", "--trust-pickle", "--framework", "sklearn")
    assert "(pickle" in flat(pushed.stderr)
    detail = json.loads(server.cli("models", "show", "fmt-pkl@1.0.0").stdout)
    assert detail["trusted_pickle"] is True and detail["format"] == "pickle"
    server.deploy("modelstore", "app.py:PickleModel", name="fmt-pkl", models=["fmt-pkl@1.0.0"],
                  config={"model": "fmt-pkl"})
    response = server.invoke("fmt-pkl", {"x": probe})
    assert response.status_code == 200, response.text
    assert response.json() == {"y": expected, "class": "LogisticRegression"}
    server.delete("fmt-pkl")


def test_pickles_are_refused_without_the_flag(server: StratusServer, tmp_path: Path) -> None:
    path, _, _ = _sklearn_model(tmp_path)
    refused = push(server, "fmt-pkl-no", path, "1.0.0", check=False)
    assert refused.returncode == 1
    assert "refusing to store a pickle" in flat(refused.stderr) and "runs any code" in flat(refused.stderr)
    assert "--trust-pickle" in flat(refused.stderr)
    assert server.http.get("/api/models/fmt-pkl-no").status_code == 404
    # The REST API refuses it too, even with the file uploaded.
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    assert server.http.put(f"/api/blobs/{digest}", content=data).status_code in (200, 201)
    body = {"version": "1.0.0", "format": "pickle",
            "files": {"classifier.pkl": {"sha256": digest, "size": len(data)}}}
    response = server.http.post("/api/models/fmt-pkl-no/versions", json=body)
    assert response.status_code == 400
    assert error_of(response)["type"] == "invalid_request"
    assert "loading one runs any code it names" in error_of(response)["message"]
    assert server.http.get("/api/models/fmt-pkl-no").status_code == 404


# -- versions in use, garbage collection ----------------------------------------------------
def test_versions_in_use_cannot_be_deleted_and_gc_keeps_what_is_used(fresh_server: StratusServer,
                                                                      tmp_path: Path) -> None:
    server = fresh_server
    used, dropped = tmp_path / "used.safetensors", tmp_path / "dropped.safetensors"
    make_weights(used, 60, w=(128, 128))
    make_weights(dropped, 61, w=(128, 128))
    used_digest, dropped_digest = sha256(used), sha256(dropped)
    push(server, "gc-m", used, "1.0.0")
    push(server, "gc-m", dropped, "2.0.0")
    server.deploy("modelstore", "app.py:TensorSums", name="gc-user", models=["gc-m@1.0.0"],
                  config={"model": "gc-m"}, preload=TORCH)
    assert server.invoke("gc-user").status_code == 200

    response = server.http.delete("/api/models/gc-m/versions/1.0.0")
    assert response.status_code == 409, response.text
    assert error_of(response)["type"] == "conflict"
    assert "gc-m@1.0.0 is used by gc-user (revision 1)" in error_of(response)["message"]
    whole = server.http.delete("/api/models/gc-m")
    assert whole.status_code == 409 and "gc-user" in error_of(whole)["message"]
    refused = server.cli("models", "rm", "gc-m@1.0.0", check=False)
    assert refused.returncode == 1 and "conflict (409)" in flat(refused.stderr)

    server.cli("models", "rm", "gc-m@2.0.0")  # not used: deleted
    assert server.http.get("/api/models/gc-m/versions/2.0.0").status_code == 404
    kept = server.cli("gc")  # default grace (an hour): a fresh orphan survives
    assert "removed 0 blob(s)" in flat(kept.stderr)
    assert blob_file(server, dropped_digest).is_file()
    collected = server.cli("gc", "--grace", "0")
    assert "removed 1 blob(s)" in flat(collected.stderr), flat(collected.stderr)
    assert not blob_file(server, dropped_digest).exists()
    assert not Path(f"{blob_file(server, dropped_digest)}.verified").exists()
    assert not Path(f"{blob_file(server, dropped_digest)}.key").exists()
    assert server.http.head(f"/api/blobs/{dropped_digest}").status_code == 404
    assert blob_file(server, used_digest).is_file()
    assert server.http.head(f"/api/blobs/{used_digest}").status_code == 200
    assert server.http.head(f"/api/bundles/{build_bundle(APPS / 'modelstore').digest}").status_code == 200, \
        "a live deployment's code bundle is kept"
    response = server.invoke("gc-user")
    assert response.status_code == 200 and response.json()["version"] == "1.0.0"
    copy = cache_root(server.data_dir) / "blobs" / used_digest
    assert copy.is_file(), "the decrypted copy the live deployment maps"

    server.delete("gc-user")
    assert server.http.delete("/api/models/gc-m/versions/1.0.0").status_code == 200
    assert server.http.get("/api/models/gc-m").status_code == 404, "its last version took the model"
    server.cli("gc", "--grace", "0")
    assert not blob_file(server, used_digest).exists()
    assert server.http.head(f"/api/blobs/{used_digest}").status_code == 404
    assert not copy.exists() and not Path(f"{copy}.verified").exists()


def test_model_deployments_survive_a_restart(fresh_server: StratusServer, tmp_path: Path) -> None:
    server = fresh_server
    good, bad = tmp_path / "good.safetensors", tmp_path / "bad.safetensors"
    sums = make_weights(good, 70)
    make_weights(bad, 71, w=(64, 64))
    push(server, "keep-m", good, "1.0.0", "--stage", "production")
    push(server, "rot-m", bad, "1.0.0")
    server.deploy("modelstore", "app.py:TensorSums", name="keep-d", models=["keep-m@production"],
                  config={"model": "keep-m"}, preload=TORCH, min_replicas=1, ready=1)
    server.deploy("modelstore", "app.py:TensorSums", name="rot-d", models=["rot-m@1.0.0"],
                  config={"model": "rot-m"}, preload=TORCH)
    assert server.stop() in (0, -15)
    _corrupt(blob_file(server, sha256(bad)))  # bit rot while the server was down
    server.start()
    view = server.wait_ready("keep-d", 1)
    assert view["revision"] == 1
    assert view["models"] == [{"ref": "keep-m@production", "version": "1.0.0", "format": "safetensors"}]
    response = server.invoke("keep-d")
    assert response.status_code == 200 and response.json()["version"] == "1.0.0"
    assert_sums(response.json(), sums)
    rotten = server.invoke("rot-d")
    assert rotten.status_code == 503, rotten.text
    assert "rot-m@1.0.0 (bad.safetensors) is corrupted" in error_of(rotten)["message"]


# -- interrupted uploads ----------------------------------------------------------------
def _tmp_entries(server: StratusServer) -> list[str]:
    return sorted(p.name for p in (server.data_dir / "artifacts" / "tmp").iterdir())


def test_an_interrupted_upload_leaves_nothing_behind(server: StratusServer) -> None:
    wait_for(lambda: not _tmp_entries(server), 10, "an empty artifacts/tmp to start from")
    total = 8 * MIB
    data = os.urandom(total)
    digest = hashlib.sha256(data).hexdigest()
    sock = socket.create_connection(("127.0.0.1", server.port))
    try:
        sock.sendall((f"PUT /api/blobs/{digest} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"Authorization: Bearer {server.key}\r\n"
                      f"Content-Type: application/octet-stream\r\nContent-Length: {total}\r\n\r\n").encode())
        sock.sendall(data[: 3 * MIB])
        # The upload is being written to a temporary file ...
        wait_for(lambda: [n for n in _tmp_entries(server) if n.startswith("upload-")], 10,
                 "the upload to reach artifacts/tmp")
    finally:
        # ... when the client drops the connection (a reset, as a killed client's would be).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    wait_for(lambda: not _tmp_entries(server), 10, "the partial upload to be removed")
    assert server.http.head(f"/api/blobs/{digest}").status_code == 404
    assert not blob_file(server, digest).exists()

    # A whole body whose sha256 is not the one named: refused, nothing kept.
    # The last byte flipped: replacing it with a zero left the body unchanged whenever the
    # random data already ended in one (1 run in 256; a CI run got its 201).
    response = server.http.put(f"/api/blobs/{digest}", content=data[:-1] + bytes([data[-1] ^ 1]))
    assert response.status_code == 400 and "upload digest mismatch" in error_of(response)["message"]
    assert server.http.head(f"/api/blobs/{digest}").status_code == 404
    assert _tmp_entries(server) == []
    # The same upload, whole: stored.
    response = server.http.put(f"/api/blobs/{digest}", content=data)
    assert response.status_code == 201 and response.json()["size"] == total
    assert server.http.head(f"/api/blobs/{digest}").status_code == 200
    assert data[:4096] not in blob_file(server, digest).read_bytes(), "stored sealed"
    bad = server.http.head("/api/blobs/NOT-A-DIGEST")
    assert bad.status_code == 400


# -- weights shared between replicas -----------------------------------------------------
@pytest.fixture(scope="module")
def big_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~200 MB: 50 float32 tensors of 1M elements, seeded."""
    generator = torch.Generator().manual_seed(123)
    path = tmp_path_factory.mktemp("big") / "big.safetensors"
    save_file({f"t{i:02d}": torch.randn(1 << 20, generator=generator) for i in range(50)}, path)
    return path


def _smaps_rollup(pid: int) -> dict[str, int]:
    values = {}
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            fields = line.split()
            if fields[0].endswith(":") and len(fields) >= 2 and fields[1].isdigit():
                values[fields[0][:-1]] = int(fields[1]) * 1024
    return values


def _mapping(pid: int, path: str) -> dict[str, int]:
    """The smaps counters (bytes) of a process's mappings of ``path``, summed."""
    values: dict[str, int] = {}
    inside = False
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if fields and not fields[0].endswith(":") and "-" in fields[0]:
                inside = len(fields) >= 6 and fields[5] == path
            elif inside and len(fields) >= 2 and fields[1].isdigit():
                values[fields[0][:-1]] = values.get(fields[0][:-1], 0) + int(fields[1]) * 1024
    return values


def test_replicas_share_one_copy_of_the_weights(server: StratusServer, big_model: Path) -> None:
    size = big_model.stat().st_size
    assert 195 * MIB < size < 205 * MIB
    push(server, "big", big_model, "1.0.0")
    server.deploy("modelstore", "app.py:SharedWeights", name="shared", models=["big@1.0.0"],
                  config={"model": "big"}, preload=TORCH, min_replicas=3, max_replicas=3)
    view = server.wait_ready("shared", 3, timeout=120)
    pids = [item["pid"] for item in view["replicas"]["items"]]
    blob = str(cache_root(server.data_dir) / "blobs" / sha256(big_model))  # decrypted, on disk
    totals = {server.invoke("shared").json()["total"] for _ in range(6)}
    assert len(totals) == 1, "every replica read the same weights"
    assert server.invoke("shared").json()["blobs"] == [blob], "the model directory links to the blob"

    rollups = {pid: _smaps_rollup(pid) for pid in pids}
    mappings = {pid: _mapping(pid, blob) for pid in pids}
    for pid in pids:
        mapped, rollup = mappings[pid], rollups[pid]
        # Each replica touched all the weights: all of them are resident in its mapping of the
        # blob, as pages of the file that it shares, none copied into its own memory.
        assert mapped["Rss"] >= 0.97 * size, (pid, mapped)
        assert mapped["Shared_Clean"] + mapped["Shared_Dirty"] >= 0.97 * size, (pid, mapped)
        assert mapped["Private_Dirty"] + mapped["Anonymous"] + mapped["Private_Clean"] < 2 * MIB, mapped
        private = rollup["Private_Clean"] + rollup["Private_Dirty"]
        assert rollup["Rss"] - private >= 0.97 * size, (pid, rollup)
        assert private < 0.5 * size, (pid, rollup)
    # The model counts once, not three times, in the replicas' proportional set sizes.
    mapped_pss = sum(mapping["Pss"] for mapping in mappings.values())
    assert mapped_pss <= 1.05 * size, mapped_pss / size
    total_pss = sum(rollup["Pss"] for rollup in rollups.values())
    # Three private copies would be >= 3x the model; what is there beyond one copy is three
    # interpreters' own memory (about 40 MB each, with torch shared from the zygote).
    assert total_pss < 2.0 * size, total_pss / size
    reported = server.status("shared")["memory_mb"] * MIB
    assert reported < 2.0 * size, "the deployment's reported memory counts the weights once"
    server.delete("shared")
    wait_for(lambda: not any(pid_alive(pid) for pid in pids), 15, "the replicas to exit")


# -- the host memory budget --------------------------------------------------------------
BUDGET_MB = 230  # room for one replica declaring 200 MB, never for two
BUDGET_ENV = {"STRATUS_TICK_S": "0.2", "STRATUS_MAX_BACKOFF_S": "30", "STRATUS_HEARTBEAT_TIMEOUT_S": "4",
              "STRATUS_MEMORY_BUDGET_MB": str(BUDGET_MB)}


@pytest.fixture(params=["disk"])
def budget_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[StratusServer]:
    """Decrypted copies on the data disk (the default), or in memory when a test asks."""
    instance = StratusServer(tmp_path / "data", BUDGET_ENV)
    instance.data_dir.mkdir(parents=True)
    (instance.data_dir / "stratus.yaml").write_text(f"artifacts: {{plaintext: {request.param}}}\n")
    instance.start()
    yield instance
    instance.stop()


def _deploy_pair(server: StratusServer, a_floor: int = 0, stz: float = 60) -> None:
    # A takes 64 MiB of its own: once it reports its PSS, 200 MB more no longer fit beside it.
    server.deploy("modelstore", "app.py:Hungry", name="mem-a", memory_mb=200, config={"alloc_mb": 64},
                  min_replicas=a_floor, scale_to_zero_after_s=stz)
    server.deploy("modelstore", "app.py:Hungry", name="mem-b", memory_mb=200, scale_to_zero_after_s=stz)


def _reported_memory(server: StratusServer, name: str) -> bool:
    items = server.status(name)["replicas"]["items"]
    return bool(items) and all(item["pss_mb"] for item in items)


def _no_room(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert error_of(response)["type"] == "unavailable"
    assert f"the host memory budget ({BUDGET_MB} MiB) has no room for another replica of 'mem-b'" \
        in error_of(response)["message"]
    assert float(response.headers["retry-after"]) > 0


def test_an_idle_replica_is_evicted_to_make_room(budget_server: StratusServer) -> None:
    server = budget_server
    _deploy_pair(server, stz=10)
    first = server.invoke("mem-a")
    assert first.status_code == 200
    pid_a = first.json()["pid"]
    wait_for(lambda: _reported_memory(server, "mem-a"), 10, "A's first heartbeat")
    response = server.invoke("mem-b")
    assert response.status_code == 200, response.text
    assert response.headers["x-stratus-cold-start"] == "true"
    wait_for(lambda: not pid_alive(pid_a), 15, "A's evicted replica to exit")
    assert "evicting idle replica mem-a-1-" in server.log_tail(200)
    assert "exceeded its memory limit" not in server.log_tail(200)


def test_an_evicted_deployment_is_not_restarted_while_idle(budget_server: StratusServer) -> None:
    server = budget_server
    _deploy_pair(server, stz=60)
    assert server.invoke("mem-a").status_code == 200
    wait_for(lambda: _reported_memory(server, "mem-a"), 10, "A's first heartbeat")
    assert server.invoke("mem-b").status_code == 200
    wait_for(lambda: server.status("mem-b")["replicas"]["ready"] == 1, 10, "B ready")
    pid_b = server.status("mem-b")["replicas"]["items"][0]["pid"]
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        a_items, b_items = (server.status(name)["replicas"]["items"] for name in ("mem-a", "mem-b"))
        assert a_items == [], f"idle A was started again: {a_items}"
        assert [item["pid"] for item in b_items] == [pid_b], f"B's replica was evicted: {b_items}"
        time.sleep(0.1)


def test_no_room_while_the_other_replica_is_busy_is_a_503(budget_server: StratusServer) -> None:
    server = budget_server
    _deploy_pair(server, stz=60)
    results: list[httpx.Response] = []
    worker = threading.Thread(target=lambda: results.append(server.invoke("mem-a", {"sleep": 4})))
    worker.start()
    wait_for(lambda: server.status("mem-a")["replicas"]["items"]
             and server.status("mem-a")["replicas"]["items"][0]["inflight"] == 1, 15, "A busy")
    pid_a = server.status("mem-a")["replicas"]["items"][0]["pid"]
    started = time.monotonic()
    _no_room(server.invoke("mem-b"))
    assert time.monotonic() - started < 2, "refused at once, not after queueing"
    assert pid_alive(pid_a), "a busy replica is never evicted"
    worker.join(30)
    assert results and results[0].status_code == 200 and results[0].json()["pid"] == pid_a
    assert "exceeded its memory limit" not in server.log_tail(400)


def test_no_room_beside_a_deployment_at_its_floor_is_a_503(budget_server: StratusServer) -> None:
    server = budget_server
    _deploy_pair(server, a_floor=1, stz=60)
    view = server.wait_ready("mem-a", 1)
    pid_a = view["replicas"]["items"][0]["pid"]
    wait_for(lambda: _reported_memory(server, "mem-a"), 10, "A's first heartbeat")
    _no_room(server.invoke("mem-b"))
    time.sleep(1)  # a few reconcile ticks: the floor stays
    assert pid_alive(pid_a)
    assert [item["pid"] for item in server.status("mem-a")["replicas"]["items"]] == [pid_a]
    assert server.status("mem-b")["replicas"]["ready"] == 0
    assert "exceeded its memory limit" not in server.log_tail(400)


def _copy_a(server: StratusServer, tmp_path: Path) -> tuple[Path, dict[str, float]]:
    """Deployment A maps a 120 MiB model and goes back to zero; its copy and the sums."""
    path = tmp_path / "copy.safetensors"
    sums = make_weights(path, 7, **{f"t{i:02d}": (1 << 20,) for i in range(30)})  # 120 MiB
    push(server, "copy", path, "1.0.0")
    server.deploy("modelstore", "app.py:TensorSums", name="copy-a", models=["copy@1.0.0"],
                  config={"model": "copy"}, preload=TORCH, memory_mb=100,
                  scale_to_zero_after_s=1)
    assert_sums(server.invoke("copy-a").json(), sums)
    copy = next(cache_root(server.data_dir, where) / "blobs" / sha256(path)
                for where in ("disk", "memory")
                if (cache_root(server.data_dir, where) / "blobs" / sha256(path)).is_file())
    wait_for(lambda: server.status("copy-a")["replicas"]["items"] == [], 30, "A to scale to zero")
    assert copy.is_file(), "nothing needed its memory yet: the copy stays for A's next start"
    return copy, sums


@pytest.mark.parametrize("budget_server", ["memory"], indirect=True)
def test_a_decrypted_copy_in_memory_is_charged_and_dropped_to_make_room(
        budget_server: StratusServer, tmp_path: Path) -> None:
    """Decrypted weights in /dev/shm are memory the kernel cannot reclaim: the budget charges
    the copy and drops it, once no replica maps it, to make room."""
    server = budget_server
    copy, sums = _copy_a(server, tmp_path)
    assert copy.is_relative_to("/dev/shm")

    # 120 MiB of copy + 200 MB declared by B do not fit in 230 MiB: the copy nobody maps goes.
    server.deploy("modelstore", "app.py:Hungry", name="mem-b", memory_mb=200,
                  scale_to_zero_after_s=60)
    assert server.invoke("mem-b").status_code == 200
    wait_for(lambda: not copy.exists(), 10, "A's decrypted copy to be dropped")
    assert "dropping the decrypted copy of blob" in server.log_tail(200)

    # A's next start decrypts the copy again; B's idle replica makes way for both.
    response = server.invoke("copy-a")
    assert response.status_code == 200, response.text
    assert_sums(response.json(), sums)
    assert copy.is_file()
    assert "exceeded its memory limit" not in server.log_tail(400)


def test_a_decrypted_copy_on_disk_is_page_cache_and_stays(budget_server: StratusServer,
                                                          tmp_path: Path) -> None:
    """A copy on disk that no replica maps is page cache the kernel reclaims: the budget does
    not charge it, so B fits beside it and the copy stays for A's next start, which is not
    decrypted again (it makes room for the pages A will map by evicting B's idle replica)."""
    server = budget_server
    copy, sums = _copy_a(server, tmp_path)
    assert copy.is_relative_to(server.data_dir / "run" / "plain")
    server.deploy("modelstore", "app.py:Hungry", name="mem-b", memory_mb=200,
                  scale_to_zero_after_s=60)
    assert server.invoke("mem-b").status_code == 200
    inode = copy.stat().st_ino
    response = server.invoke("copy-a")
    assert response.status_code == 200, response.text
    assert_sums(response.json(), sums)
    assert copy.stat().st_ino == inode, "the copy was kept"
    log = server.log_tail(400)
    assert "dropping the decrypted copy of blob" not in log
    assert "evicting idle replica mem-b-1-" in log
    assert "exceeded its memory limit" not in log


def test_a_deleted_deployment_takes_its_decrypted_copy_with_it(server: StratusServer,
                                                               tmp_path: Path) -> None:
    path = tmp_path / "gone.safetensors"
    sums = make_weights(path, 11)
    push(server, "gone", path, "1.0.0")
    server.deploy("modelstore", "app.py:TensorSums", name="gone", models=["gone@1.0.0"],
                  config={"model": "gone"}, preload=TORCH)
    assert_sums(server.invoke("gone").json(), sums)
    copy = cache_root(server.data_dir) / "blobs" / sha256(path)
    assert copy.is_file()
    metrics = server.http.get("/metrics").text
    held = next(line for line in metrics.splitlines() if line.startswith("stratus_decrypted_copy_bytes "))
    assert float(held.split()[1]) >= path.stat().st_size
    assert any(line.startswith("stratus_decrypt_seconds_total ") for line in metrics.splitlines())
    server.delete("gone")
    wait_for(lambda: not copy.exists(), 15, "the deleted deployment's copy to be dropped")
