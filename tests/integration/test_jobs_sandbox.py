"""Jobs in the replicas' sandbox on a server running as root: the worker runs as its
namespace's own user, in its own directory, without the server's secrets, and still writes
its log, checkpoints and model; another namespace's user is another uid."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_jobs import push_iris, run, wait_ended

from server import TEST_ENV, StratusServer


@pytest.fixture(scope="module")
def own_users() -> Iterator[StratusServer]:
    # Not under pytest's temporary directory (see test_sandbox): namespace users must reach it.
    base = Path(tempfile.mkdtemp(prefix="stratus-jobs-sandbox-"))
    base.chmod(0o711)
    instance = StratusServer(base / "data", TEST_ENV)
    try:
        instance.start()
        yield instance
    finally:
        if instance.process is not None:
            instance.stop()
        shutil.rmtree(base, ignore_errors=True)


def _whoami(server: StratusServer, namespace: str) -> dict[str, Any]:
    server.http.headers["x-stratus-namespace"] = namespace
    try:
        job = run(server, "train.py:whoami",
                  params={"master_key": str(server.data_dir / "master.key")})
        view = wait_ended(server, job["id"])
        assert view["status"] == "succeeded", (view["error"], server.http.get(
            f"/api/jobs/{job['id']}/logs").text)
        log = server.http.get(f"/api/jobs/{job['id']}/logs").text
        assert f"uid {view['params']['uid']} in " in log
        return view
    finally:
        del server.http.headers["x-stratus-namespace"]


def test_a_job_runs_as_its_namespaces_own_user(own_users: StratusServer, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only a server running as root runs jobs as other users")
    first = _whoami(own_users, "jobs-a")
    assert first["params"]["uid"] != 0
    second = _whoami(own_users, "jobs-b")
    assert first["params"]["uid"] != second["params"]["uid"]
    for view in (first, second):
        assert view["params"]["sees_server_key"] is False
        assert view["params"]["reads_master_key"] is False
        assert view["checkpoints"] == 1 and view["model"]["format"] == "safetensors"
    # The dataset's plaintext is opened to the namespace's user for the job to read.
    own_users.http.headers["x-stratus-namespace"] = "jobs-a"
    try:
        push_iris(own_users, tmp_path, "iris", namespace="jobs-a")
        job = run(own_users, "train.py:fit_dataset", datasets=["iris@1"],
                  params={"dataset": "iris@1", "epochs": 1})
        view = wait_ended(own_users, job["id"])
        assert view["status"] == "succeeded", view["error"]
        assert view["params"]["train_rows"] == 120
    finally:
        del own_users.http.headers["x-stratus-namespace"]
