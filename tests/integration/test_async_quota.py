"""A namespace's ``max_queued`` quota: async invocations beyond it get a 429 while the queue is
full, also when they arrive together, other namespaces are not held back, and the queued work
still runs."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Barrier

import httpx
import yaml
from test_async_invocations import enqueue, marker_dir, wait_done

from server import TEST_ENV, StratusServer, wait_for


def test_queued_work_over_the_quota_is_refused_until_it_drains(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "stratus.yaml").write_text(yaml.safe_dump(
        {"quotas": {"default": {"max_queued": 3}}}))  # every namespace: 3 each
    server = StratusServer(data_dir, TEST_ENV)
    server.start()
    try:
        markers = marker_dir(tmp_path)
        server.deploy("asyncjobs", "app.py:slow", name="quota-slow", max_replicas=1,
                      max_concurrency=1, config={"marker_dir": markers},
                      async_invocations={"share": 1.0})
        running = enqueue(server.http, "quota-slow", {"steps": 1, "step_s": 1.0}).json()["id"]
        server.wait_ready("quota-slow")
        queued = [enqueue(server.http, "quota-slow", {"steps": 1, "step_s": 0}) for _ in range(3)]
        assert all(response.status_code == 202 for response in queued)
        refused = enqueue(server.http, "quota-slow", {"steps": 1, "step_s": 0})
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["type"] == "quota_exceeded"
        assert "max_queued" in refused.json()["error"]["message"]
        assert refused.headers["retry-after"]
        _, other_key = server.mint_key("quota-other", "developer")
        with server.client_as(other_key) as other:
            # Another namespace's queue is its own: a full one here holds nothing back there.
            deployed = other.post("/api/deployments", json={
                "name": "quota-slow", "code": {"bundle": server.upload("asyncjobs", other),
                                               "entrypoint": "app.py:echo"}})
            assert deployed.status_code == 200, deployed.text
            assert enqueue(other, "quota-slow", {}).status_code == 202
        for invocation_id in [running] + [response.json()["id"] for response in queued]:
            assert wait_done(server, invocation_id)["status"] == "succeeded"
        again = enqueue(server.http, "quota-slow", {"steps": 1, "step_s": 0})
        assert again.status_code == 202, again.text
    finally:
        server.stop()


def test_submissions_arriving_together_cannot_overrun_the_quota(tmp_path: Path) -> None:
    """Eight submissions at once into room for three: the check counts those still being
    written, or all eight would pass it before the first is recorded."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "stratus.yaml").write_text(yaml.safe_dump(
        {"quotas": {"default": {"max_queued": 3}}}))
    server = StratusServer(data_dir, TEST_ENV)
    server.start()
    try:
        # A replica that takes long to start: the one invocation claimed meanwhile waits for
        # it, and no other leaves the queue during the race.
        server.deploy("basic", "app.py:Echo", name="together", max_replicas=1,
                      config={"init_sleep": 20}, async_invocations={"share": 1.0})
        first = enqueue(server.http, "together", {}).json()["id"]
        wait_for(lambda: server.http.get(f"/api/invocations/{first}").json()["status"]
                 == "running", 30, "the first invocation to be claimed")
        start = Barrier(8)

        def submit(_: int) -> httpx.Response:
            with server.client_as(server.key) as client:
                client.get("/healthz")  # connected before the start
                start.wait()
                return enqueue(client, "together", {})

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(submit, range(8)))
        assert sorted(r.status_code for r in answers) == [202] * 3 + [429] * 5, \
            [r.text[:120] for r in answers]
        refused = next(r for r in answers if r.status_code == 429).json()["error"]
        assert refused["type"] == "quota_exceeded" and "max_queued" in refused["message"]
        listed = server.http.get("/api/invocations", params={"deployment": "together"}).json()
        assert len(listed["invocations"]) == 4  # the one running and three queued
    finally:
        server.stop()
