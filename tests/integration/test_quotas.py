"""Quotas and request limits on a real server: rate limits per namespace and per key (429 with
Retry-After, other tenants unaffected), the namespace concurrency cap (429), replica and
memory caps (403 at deploy time, a hard ceiling at run time), deep JSON (400), slow and
bloated clients (408, 431), and PII masked in the payload log."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from server import TEST_ENV, StratusServer, wait_for

CONFIG = {
    "quotas": {"namespaces": {
        "limited": {"namespace_rps": 2, "namespace_burst": 3},
        "busy": {"max_concurrency": 2},
        "capped": {"max_replicas": 3, "max_memory_mb": 1024},
        "tight": {"max_replicas": 1},
    }},
    "logging": {"payloads": True},
}
LIMITS_ENV = {"STRATUS_BODY_TIMEOUT_S": "1", "STRATUS_HEADER_TIMEOUT_S": "1",
              "STRATUS_MAX_HEADER_BYTES": "16384"}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StratusServer]:
    root = tmp_path_factory.mktemp("quotas")
    config = root / "stratus.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    instance = StratusServer(root / "data", {**TEST_ENV, **LIMITS_ENV,
                                             "STRATUS_CONFIG": str(config)})
    instance.start()
    instance.deploy("basic", "app:Echo", name="echo", min_replicas=1, ready=1)
    yield instance
    instance.stop()


def ns(namespace: str) -> dict[str, str]:
    return {"x-stratus-namespace": namespace}


def deploy_in(server: StratusServer, namespace: str, **fields: Any) -> httpx.Response:
    body = {"code": {"bundle": server.upload("basic"), "entrypoint": "app:Echo"}, **fields}
    return server.http.post("/api/deployments", json=body, headers=ns(namespace))


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


def test_namespace_rate_limit_answers_429_and_spares_other_namespaces(
        limited: StratusServer) -> None:
    statuses = [limited.invoke("nothing-here", headers=ns("limited")) for _ in range(8)]
    assert [r.status_code for r in statuses[:3]] == [404, 404, 404]  # the burst passes
    refused = [r for r in statuses if r.status_code == 429]
    assert len(refused) >= 4
    assert error_of(refused[0])["type"] == "rate_limited"
    assert "namespace 'limited'" in error_of(refused[0])["message"]
    assert refused[0].headers["retry-after"] == "1"
    assert refused[0].headers["x-request-id"] == error_of(refused[0])["request_id"]
    # The same buckets hold for the control plane.
    assert limited.http.get("/api/deployments", headers=ns("limited")).status_code == 429
    # Another namespace is not touched by it.
    assert all(limited.invoke("echo").status_code == 200 for _ in range(10))
    time.sleep(1.6)  # tokens come back at 2 a second
    assert limited.invoke("nothing-here", headers=ns("limited")).status_code == 404
    metrics = limited.http.get("/metrics").text
    assert 'stratus_refused_requests_total{limit="namespace_rps",namespace="limited"}' in metrics


def test_a_keys_own_rate_limit_holds_for_that_key_only(limited: StratusServer) -> None:
    def new_key(rate: float | None) -> str:
        return limited.mint_key("default", "invoker", rate_limit_rps=rate)[1]

    slow, free = new_key(1.0), new_key(None)
    with httpx.Client(base_url=limited.url, timeout=30) as client:
        def invoke(key: str) -> httpx.Response:
            return client.post("/api/deployments/echo/invoke", json={},
                               headers={"authorization": f"Bearer {key}"})

        assert invoke(slow).status_code == 200
        second = invoke(slow)
        assert second.status_code == 429 and error_of(second)["type"] == "rate_limited"
        assert f"key '{slow.split('_')[0]}_{slow.split('_')[1]}'" in error_of(second)["message"]
        assert int(second.headers["retry-after"]) >= 1
        assert all(invoke(free).status_code == 200 for _ in range(5))


def test_concurrency_cap_answers_429_while_the_namespace_is_full(limited: StratusServer) -> None:
    response = deploy_in(limited, "busy", name="echo", min_replicas=1)
    assert response.status_code == 200, response.text
    wait_for(lambda: limited.http.get("/api/deployments/echo", headers=ns("busy"))
             .json()["replicas"]["ready"] >= 1, 60, "the busy namespace's replica")
    with ThreadPoolExecutor(2) as pool:
        slow = [pool.submit(limited.invoke, "echo", {"sleep": 2}, headers=ns("busy"))
                for _ in range(2)]
        time.sleep(0.7)
        third = limited.invoke("echo", headers=ns("busy"))
        assert third.status_code == 429, third.text
        assert error_of(third)["type"] == "quota_exceeded"
        assert "2 requests in flight" in error_of(third)["message"]
        assert third.headers["retry-after"] == "1"
        assert limited.invoke("echo").status_code == 200  # the default namespace is not full
        assert [future.result().status_code for future in slow] == [200, 200]
    assert limited.invoke("echo", headers=ns("busy")).status_code == 200  # released
    metrics = limited.http.get("/metrics").text
    assert 'stratus_refused_requests_total{limit="max_concurrency",namespace="busy"} 1.0' in metrics


def test_replica_and_memory_caps_refuse_a_deploy_that_would_exceed_them(
        limited: StratusServer) -> None:
    too_many = deploy_in(limited, "capped", name="big", max_replicas=4, memory_mb=128)
    assert too_many.status_code == 403
    assert error_of(too_many)["type"] == "quota_exceeded"
    assert "at most 3 replicas" in error_of(too_many)["message"]
    undeclared = deploy_in(limited, "capped", name="big", max_replicas=1)
    assert undeclared.status_code == 403 and "must set memory_mb" in error_of(undeclared)["message"]
    assert deploy_in(limited, "capped", name="a", max_replicas=2, memory_mb=256).status_code == 200
    second = deploy_in(limited, "capped", name="b", max_replicas=2, memory_mb=256)
    assert second.status_code == 403 and "makes 4" in error_of(second)["message"]
    assert deploy_in(limited, "capped", name="b", max_replicas=1, memory_mb=512).status_code == 200
    patch = limited.http.patch("/api/deployments/b", json={"memory_mb": 600}, headers=ns("capped"))
    assert patch.status_code == 403
    assert "1024 MB" in error_of(patch)["message"] and "makes 1112 MB" in error_of(patch)["message"]
    listed = limited.http.get("/api/deployments", headers=ns("capped")).json()["deployments"]
    assert sorted(d["name"] for d in listed) == ["a", "b"]
    assert limited.http.get("/api/deployments/b", headers=ns("capped")).json()["runtime"][
        "memory_mb"] == 512  # the refused patch changed nothing


def test_the_replica_cap_holds_at_run_time(limited: StratusServer) -> None:
    """A new revision's rollout would run a second replica next to the first: the namespace
    may run one, so the rollout waits and the old revision keeps serving."""
    assert deploy_in(limited, "tight", name="one", min_replicas=1, max_replicas=1).status_code == 200

    def view() -> dict[str, Any]:
        found: dict[str, Any] = limited.http.get("/api/deployments/one", headers=ns("tight")).json()
        return found

    wait_for(lambda: view()["replicas"]["ready"] == 1, 60, "the tight namespace's replica")
    update = deploy_in(limited, "tight", name="one", min_replicas=1, max_replicas=1,
                       config={"version": 2})
    assert update.status_code == 200 and update.json()["revision"] == 2
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        replicas = view()["replicas"]
        assert replicas["ready"] + replicas["starting"] + replicas["draining"] <= 1
        time.sleep(0.2)
    answer = limited.invoke("one", headers=ns("tight"))
    assert answer.status_code == 200 and answer.headers["x-stratus-revision"] == "1"
    assert "namespace 'tight' is at its quota" in (limited.data_dir / "logs" / "server.jsonl") \
        .read_text()


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_deep_json_is_refused_and_the_replica_keeps_serving(limited: StratusServer) -> None:
    headers = {"content-type": "application/json"}
    for body in (_nested(65), _nested(200_000), b"[" * 300_000):
        refused = limited.http.post("/api/deployments/echo/invoke", content=body, headers=headers)
        assert refused.status_code == 400, refused.text
        assert error_of(refused)["type"] == "invalid_json"
        assert "deeper than the limit of 64" in error_of(refused)["message"]
    fine = limited.http.post("/api/deployments/echo/invoke", content=_nested(64), headers=headers)
    assert fine.status_code == 200
    v2 = limited.http.post("/v2/models/echo/infer", content=b'{"inputs": ' + _nested(100) + b"}")
    assert v2.status_code == 400 and v2.json()["error_type"] == "invalid_json"
    openai = limited.http.post("/v1/chat/completions", content=b'{"messages": ' + _nested(100) + b"}")
    assert openai.status_code == 400 and openai.json()["error"]["code"] == "invalid_json"
    control = limited.http.post("/api/deployments", content=b'{"config": ' + _nested(100) + b"}",
                                headers=headers)
    assert control.status_code == 400 and error_of(control)["type"] == "invalid_json"
    assert limited.invoke("echo", {"ok": [[1]]}).json()["echo"] == {"ok": [[1]]}


def _raw(server: StratusServer, data: bytes, wait: float = 5.0) -> bytes:
    """Send ``data`` and read what the server answers until it closes the connection."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def _status_and_error(answer: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)["error"]


def test_slow_and_bloated_clients_are_cut_off(limited: StratusServer) -> None:
    auth = f"authorization: Bearer {limited.key}\r\n".encode()
    started = time.monotonic()
    stalled_body = _raw(limited, b"POST /api/deployments/echo/invoke HTTP/1.1\r\nhost: x\r\n" + auth
                        + b"content-type: application/json\r\ncontent-length: 100\r\n\r\n{\"a\": ")
    status, error = _status_and_error(stalled_body)
    assert status == 408 and error["type"] == "body_timeout" and error["request_id"]
    assert time.monotonic() - started < 4  # a 1 s timeout, swept every second
    status, error = _status_and_error(_raw(limited, b"POST /api/deployments HTTP/1.1\r\nhost: x"))
    assert status == 408 and "headers not received" in error["message"]
    assert _raw(limited, b"").startswith(b"HTTP/1.1 408")  # connected, never said anything
    bloated = b"GET /healthz HTTP/1.1\r\n" + b"x-filler: " + b"a" * 40_000 + b"\r\n"
    status, error = _status_and_error(_raw(limited, bloated))
    assert status == 431 and error["type"] == "headers_too_large"
    assert limited.invoke("echo").status_code == 200


def test_payload_log_masks_pii(limited: StratusServer) -> None:
    secret = {"email": "jane.roe@example.com", "phone": "(555) 867-5309", "ssn": "078-05-1120"}
    response = limited.invoke("echo", {"note": "call +1 555 123 4567", **secret})
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]
    log = limited.data_dir / "logs" / "server.jsonl"

    def payload_record() -> dict[str, Any] | None:
        for line in log.read_text().splitlines():
            record = json.loads(line)
            if record.get("logger") == "stratus.payloads" and record.get("request_id") == request_id:
                found: dict[str, Any] = record
                return found
        return None

    record = wait_for(payload_record, 10, "the payload record")
    assert json.loads(record["request"]) == {"note": "call [phone]", "email": "[email]",
                                             "phone": "[phone]", "ssn": "[ssn]"}
    assert "[email]" in record["response"] and "[ssn]" in record["response"]
    assert record["namespace"] == "default" and record["status"] == 200
    text = _all_logs(limited.data_dir / "logs")
    for value in (*secret.values(), "555 123 4567"):
        assert value not in text


def _all_logs(directory: Path) -> str:
    return "".join(path.read_text(errors="replace") for path in directory.rglob("*.jsonl"))
