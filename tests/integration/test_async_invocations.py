"""Asynchronous invocations against a real server and real replicas: 202 and polling, retries,
the dead-letter queue, idempotency, progress, cancelling, priorities and destinations."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from server import StratusServer, searchable_above, wait_for

FAST_RETRIES = {"max_attempts": 3, "backoff_base_s": 0.05, "backoff_cap_s": 0.2}
TERMINAL = ("succeeded", "failed", "dead", "cancelled")


def marker_dir(tmp_path: Path) -> str:
    """A directory the handlers write their markers to: replicas run as their namespace's
    user when the server runs as root, so they must be able to reach and write it."""
    path = tmp_path / "markers"
    path.mkdir()
    path.chmod(0o777)
    searchable_above(path)
    return str(path)


def deploy(server: StratusServer, name: str, entrypoint: str, markers: str,
           **fields: Any) -> None:
    fields.setdefault("async_invocations", FAST_RETRIES)
    server.deploy("asyncjobs", f"app.py:{entrypoint}", name=name,
                  config={"marker_dir": markers}, **fields)


def enqueue(client: httpx.Client, name: str, body: Any, **headers: str) -> httpx.Response:
    return client.post(f"/api/deployments/{name}/invoke?mode=async", json=body, headers=headers)


def wait_done(server: StratusServer, invocation_id: str, timeout: float = 60,
              client: httpx.Client | None = None) -> dict[str, Any]:
    http = client or server.http

    def check() -> dict[str, Any] | None:
        view: dict[str, Any] = http.get(f"/api/invocations/{invocation_id}").json()
        return view if view["status"] in TERMINAL else None

    return wait_for(check, timeout, f"invocation {invocation_id} to finish", interval=0.05)


def attempts_of(markers: str, invocation_id: str) -> list[str]:
    path = Path(markers) / f"{invocation_id}.attempts"
    return path.read_text().splitlines() if path.exists() else []


def test_async_invoke_answers_202_then_the_result_from_zero_replicas(
        server: StratusServer) -> None:
    server.deploy("asyncjobs", "app.py:echo", name="async-echo")
    response = enqueue(server.http, "async-echo", {"x": 1})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "queued" and body["id"].startswith("inv-")
    assert response.headers["location"] == f"/api/invocations/{body['id']}"
    view = wait_done(server, body["id"])
    assert view["status"] == "succeeded", view
    assert view["result"]["echo"] == {"x": 1}
    assert view["result"]["id"] == body["id"]  # the handler's request id is the invocation's
    assert view["attempts"] == 1 and view["revision"] == 1
    assert view["started_at"] >= view["created_at"] and view["finished_at"] >= view["started_at"]
    # RFC 7240's Prefer header asks for the same.
    preferred = server.http.post("/api/deployments/async-echo/invoke", json={"y": 2},
                                 headers={"prefer": "respond-async"})
    assert preferred.status_code == 202
    assert preferred.headers["preference-applied"] == "respond-async"
    assert wait_done(server, preferred.json()["id"])["result"]["echo"] == {"y": 2}


def test_a_handler_that_fails_twice_succeeds_on_the_third_attempt(
        server: StratusServer, tmp_path: Path) -> None:
    markers = marker_dir(tmp_path)
    deploy(server, "async-flaky", "flaky", markers)
    invocation_id = enqueue(server.http, "async-flaky", {"fail_times": 2}).json()["id"]
    view = wait_done(server, invocation_id)
    assert view["status"] == "succeeded", view
    assert view["attempts"] == 3 and view["result"]["attempt"] == 3
    assert len(attempts_of(markers, invocation_id)) == 3


def test_one_that_always_fails_lands_in_the_dlq_and_is_redriven(
        server: StratusServer, tmp_path: Path) -> None:
    markers = marker_dir(tmp_path)
    deploy(server, "async-doomed", "always_fails", markers)
    invocation_id = enqueue(server.http, "async-doomed", {}).json()["id"]
    view = wait_done(server, invocation_id)
    assert view["status"] == "dead" and view["attempts"] == 3
    assert view["error"]["type"] == "handler_error"
    assert "always fails" in view["error"]["message"]
    assert view["error"]["request_id"] == invocation_id
    dlq = server.http.get("/api/deployments/async-doomed/dlq").json()["invocations"]
    assert [item["id"] for item in dlq] == [invocation_id]
    moved = server.http.post("/api/deployments/async-doomed/dlq/redrive",
                             json={"ids": [invocation_id]}).json()["redriven"]
    assert moved == [invocation_id]
    again = wait_done(server, invocation_id)
    assert again["status"] == "dead" and again["attempts"] == 3
    assert len(attempts_of(markers, invocation_id)) == 6


def test_bad_input_fails_at_once_without_retries(server: StratusServer, tmp_path: Path) -> None:
    markers = marker_dir(tmp_path)
    deploy(server, "async-picky", "bad_input", markers)
    invocation_id = enqueue(server.http, "async-picky", {}).json()["id"]
    view = wait_done(server, invocation_id)
    assert view["status"] == "failed" and view["attempts"] == 1
    assert view["error"]["type"] == "invalid_request"
    assert len(attempts_of(markers, invocation_id)) == 1
    assert server.http.get("/api/deployments/async-picky/dlq").json()["invocations"] == []


def test_idempotency_keys_name_one_invocation_sync_and_async(server: StratusServer) -> None:
    server.deploy("asyncjobs", "app.py:echo", name="async-idem")
    first = enqueue(server.http, "async-idem", {"n": 1}, **{"idempotency-key": "order-1"})
    assert first.status_code == 202
    first_id = first.json()["id"]
    wait_done(server, first_id)
    repeat = enqueue(server.http, "async-idem", {"n": 1}, **{"idempotency-key": "order-1"})
    assert repeat.status_code == 200 and repeat.json()["id"] == first_id
    assert repeat.json()["result"]["id"] == first_id
    other_body = enqueue(server.http, "async-idem", {"n": 2}, **{"idempotency-key": "order-1"})
    assert other_body.status_code == 422
    assert other_body.json()["error"]["type"] == "idempotency_conflict"
    # Sync: the repeat gets the first call's answer, without running the handler again.
    sync = server.http.post("/api/deployments/async-idem/invoke", json={"s": 1},
                            headers={"idempotency-key": "sync-1"})
    assert sync.status_code == 200
    again = server.http.post("/api/deployments/async-idem/invoke", json={"s": 1},
                             headers={"idempotency-key": "sync-1"})
    assert again.status_code == 200 and again.json() == sync.json()
    assert again.headers["x-stratus-invocation-id"] == sync.headers["x-stratus-invocation-id"]
    assert again.headers["x-stratus-idempotent-replay"] == "true"
    conflict = server.http.post("/api/deployments/async-idem/invoke", json={"s": 2},
                                headers={"idempotency-key": "sync-1"})
    assert conflict.status_code == 422


def test_progress_shows_while_running_and_cancel_stops_the_handler(
        server: StratusServer, tmp_path: Path) -> None:
    markers = marker_dir(tmp_path)
    deploy(server, "async-slow", "slow", markers)
    invocation_id = enqueue(server.http, "async-slow", {"steps": 40, "step_s": 0.1}).json()["id"]

    def progressed() -> dict[str, Any] | None:
        view: dict[str, Any] = server.http.get(f"/api/invocations/{invocation_id}").json()
        progress = view.get("progress") or {}
        return view if view["status"] == "running" and progress.get("fraction", 0) > 0 else None

    view = wait_for(progressed, 60, "progress to be reported")
    assert view["progress"]["message"].startswith("step ")
    cancelled = server.http.delete(f"/api/invocations/{invocation_id}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    time.sleep(1.0)
    assert "end" not in attempts_of(markers, invocation_id)
    assert server.http.get(f"/api/invocations/{invocation_id}").json()["status"] == "cancelled"


def test_queued_work_is_cancelled_and_priorities_order_the_queue(
        server: StratusServer, tmp_path: Path) -> None:
    markers = marker_dir(tmp_path)
    # One slot, all of it for async work: invocations wait in the queue one at a time.
    deploy(server, "async-one", "slow", markers, max_replicas=1, max_concurrency=1,
           async_invocations={**FAST_RETRIES, "share": 1.0})
    blocker = enqueue(server.http, "async-one", {"steps": 2, "step_s": 0.5}).json()["id"]
    wait_for(lambda: server.http.get(f"/api/invocations/{blocker}").json()["status"] == "running",
             60, "the first invocation to start")
    low = enqueue(server.http, "async-one", {"steps": 1, "step_s": 0},
                  **{"x-stratus-priority": "-5"}).json()["id"]
    doomed = enqueue(server.http, "async-one", {"steps": 1, "step_s": 0}).json()["id"]
    high = enqueue(server.http, "async-one", {"steps": 1, "step_s": 0},
                   **{"x-stratus-priority": "10"}).json()["id"]
    assert server.http.delete(f"/api/invocations/{doomed}").json()["status"] == "cancelled"
    views = {key: wait_done(server, key) for key in (blocker, low, high)}
    assert all(view["status"] == "succeeded" for view in views.values()), views
    assert views[high]["started_at"] < views[low]["started_at"]
    assert attempts_of(markers, doomed) == []
    assert server.http.get(f"/api/invocations/{doomed}").json()["status"] == "cancelled"


class _Hook(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    received: list[tuple[dict[str, str], bytes]] = []
    handler = type("Hook", (_Hook,), {"received": received})
    httpd = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/hook", received
    httpd.shutdown()


def test_destinations_sign_webhooks_and_chain_deployments(
        server: StratusServer, tmp_path: Path,
        webhook: tuple[str, list[tuple[dict[str, str], bytes]]]) -> None:
    url, received = webhook
    key = "whsec-" + os.urandom(8).hex()
    assert server.http.put("/api/secrets/hook-key", json={"value": key}).status_code in (200, 201)
    markers = marker_dir(tmp_path)
    server.deploy("asyncjobs", "app.py:echo", name="async-sink")
    deploy(server, "async-source", "flaky", markers, async_invocations={
        **FAST_RETRIES, "on_success": {"url": url, "secret": "hook-key"},
        "on_failure": {"deployment": "async-sink"}})
    ok = enqueue(server.http, "async-source", {"fail_times": 0}).json()["id"]
    wait_done(server, ok)
    headers, body = wait_for(lambda: received[0] if received else None, 30, "the webhook")
    timestamp, mac = (part.split("=", 1)[1] for part in headers["x-stratus-signature"].split(","))
    expected = hmac.new(key.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(mac, expected)
    event = json.loads(body)
    assert event["event"] == "invocation.succeeded" and event["id"] == ok
    assert headers["x-stratus-invocation-id"] == ok
    # A failure goes to the other deployment, as a new async invocation at the same priority.
    failed = enqueue(server.http, "async-source", {"fail_times": 99},
                     **{"x-stratus-priority": "-3"}).json()["id"]
    assert wait_done(server, failed)["status"] == "dead"

    def forwarded() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = server.http.get(
            "/api/invocations", params={"deployment": "async-sink"}).json()["invocations"]
        return items or None

    sink = wait_for(forwarded, 30, "the failure destination's invocation")[0]
    assert sink["source"] == {"kind": "destination", "invocation": failed,
                              "deployment": "async-source"}
    assert sink["priority"] == -3
    done = wait_done(server, sink["id"])
    assert done["result"]["echo"]["event"] == "invocation.dead"
    assert done["result"]["echo"]["id"] == failed


def test_bad_input_is_refused_and_queued_work_survives(server: StratusServer) -> None:
    server.deploy("asyncjobs", "app.py:echo", name="async-strict")
    unknown = enqueue(server.http, "no-such-deployment", {})
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found"
    malformed = server.http.post("/api/deployments/async-strict/invoke?mode=async",
                                 content=b"{not json", headers={"content-type": "application/json"})
    assert malformed.status_code == 400 and malformed.json()["error"]["type"] == "invalid_json"
    big = server.http.post("/api/deployments/async-strict/invoke?mode=async",
                           content=b'{"x": "' + b"a" * (2 * 1024 * 1024) + b'"}')
    assert big.status_code == 413
    assert enqueue(server.http, "async-strict", {}, **{"x-stratus-priority": "high"}).status_code == 400
    assert server.http.post("/api/deployments/async-strict/invoke?mode=later",
                            json={}).status_code == 400
    assert server.http.get("/api/invocations/inv-unknown").status_code == 404
    assert server.http.get("/api/invocations", params={"status": "lost"}).status_code == 400
    not_http = server.deploy_raw("asyncjobs", "app.py:echo", name="async-badhook",
                                 async_invocations={"on_success": {"url": "ftp://x/y",
                                                                   "secret": "s"}})
    assert not_http.status_code == 400
    # What was queued before all of that still runs.
    ok = enqueue(server.http, "async-strict", {"still": "here"}).json()["id"]
    assert wait_done(server, ok)["result"]["echo"] == {"still": "here"}


def test_namespaces_and_roles(server: StratusServer) -> None:
    server.deploy("asyncjobs", "app.py:echo", name="async-private")
    mine = enqueue(server.http, "async-private", {}).json()["id"]
    _, other_key = server.mint_key("async-other-team", "developer")
    with server.client_as(other_key) as other:
        assert other.get(f"/api/invocations/{mine}").status_code == 404
        assert other.delete(f"/api/invocations/{mine}").status_code == 404
        assert mine not in {item["id"] for item in other.get("/api/invocations").json()["invocations"]}
    _, invoker_key = server.mint_key("default", "invoker")
    with server.client_as(invoker_key) as invoker:
        queued = enqueue(invoker, "async-private", {"by": "invoker"})
        assert queued.status_code == 202
        assert wait_done(server, queued.json()["id"], client=invoker)["status"] == "succeeded"
        redrive = invoker.post("/api/deployments/async-private/dlq/redrive", json={})
        assert redrive.status_code == 403


def test_async_work_leaves_sync_traffic_its_share_and_the_backlog_scales_up(
        server: StratusServer, tmp_path: Path) -> None:
    markers = marker_dir(tmp_path)
    deploy(server, "async-busy", "slow", markers, max_replicas=3, max_concurrency=2,
           async_invocations={**FAST_RETRIES, "share": 0.5})
    ids = [enqueue(server.http, "async-busy", {"steps": 1, "step_s": 1.5}).json()["id"]
           for _ in range(12)]
    wait_for(lambda: server.http.get(f"/api/invocations/{ids[0]}").json()["status"] == "running",
             60, "the backlog to start")
    # Half the slots stay free for sync calls: one is answered while the backlog waits.
    sync = server.http.post("/api/deployments/async-busy/invoke", json={"steps": 1, "step_s": 0})
    assert sync.status_code == 200, sync.text
    queued = server.http.get("/api/invocations", params={"deployment": "async-busy",
                                                         "status": "queued"}).json()
    assert len(queued["invocations"]) >= 6
    # The queue's length is demand: the deployment scales out to its maximum.
    server.wait_replicas("async-busy", 3, timeout=60)
    for invocation_id in ids:
        assert wait_done(server, invocation_id, timeout=120)["status"] == "succeeded"


def test_the_cli_queues_watches_lists_and_redrives(server: StratusServer, tmp_path: Path) -> None:
    markers = marker_dir(tmp_path)
    deploy(server, "async-cli", "slow", markers)
    queued = server.cli("invoke", "async-cli", '{"steps": 3, "step_s": 0.2}', "--async",
                        "--idempotency-key", "cli-1", "--priority", "3")
    invocation_id = json.loads(queued.stdout)["id"]
    watched = server.cli("invocations", "watch", invocation_id, "--interval", "0.1")
    assert json.loads(watched.stdout) == {"steps": 3}
    shown = json.loads(server.cli("invocations", "get", invocation_id).stdout)
    assert shown["status"] == "succeeded" and shown["priority"] == 3
    listed = json.loads(server.cli("invocations", "ls", "--deployment", "async-cli",
                                   "--json").stdout)
    assert [item["id"] for item in listed["invocations"]] == [invocation_id]
    deploy(server, "async-cli-dead", "always_fails", markers)
    dead = json.loads(server.cli("invoke", "async-cli-dead", "{}", "--async").stdout)["id"]
    failed = server.cli("invocations", "watch", dead, "--interval", "0.1", check=False)
    assert failed.returncode == 1 and "dead" in failed.stderr
    assert dead in server.cli("dlq", "ls", "async-cli-dead").stdout
    redriven = server.cli("dlq", "redrive", "async-cli-dead")
    assert dead in redriven.stdout and "redriven: 1" in redriven.stderr


def test_a_long_poll_answers_when_the_invocation_ends(server: StratusServer,
                                                      tmp_path: Path) -> None:
    markers = marker_dir(tmp_path)
    deploy(server, "async-longpoll", "slow", markers)
    invocation_id = enqueue(server.http, "async-longpoll", {"steps": 2, "step_s": 0.3}).json()["id"]
    view = server.http.get(f"/api/invocations/{invocation_id}", params={"wait": 30}).json()
    assert view["status"] == "succeeded" and view["result"] == {"steps": 2}
    # On one still running, the answer comes after the wait, as it stands.
    slow = enqueue(server.http, "async-longpoll", {"steps": 30, "step_s": 0.2}).json()["id"]
    started = time.monotonic()
    pending = server.http.get(f"/api/invocations/{slow}", params={"wait": 0.5}).json()
    assert pending["status"] in ("queued", "running") and time.monotonic() - started >= 0.5
    assert server.http.get(f"/api/invocations/{slow}", params={"wait": 61}).status_code == 400
    server.http.delete(f"/api/invocations/{slow}")
