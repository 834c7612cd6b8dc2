"""API keys' priorities against a real server: set by the admin who mints the key (over HTTP
and with the CLI), listed, checked; and under adaptive shedding a key's requests are served at
its priority, a header asking for more lowered to it, on HTTP and gRPC alike and for async
invocations, as the shed counters, /metrics and the access log show."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as triton

from server import StratusServer, wait_for

SHED = "kp-shed"
# Pinned at 10 (initial and least 10; the most, max_concurrency + max_queued, also 10), so it
# cannot move while the test runs: low may fill 5 of it, normal 9, critical all 10.
PINNED = {"adaptive": True, "initial_limit": 10, "min_limit": 10}


@pytest.fixture(scope="module")
def keys(grpc_server: StratusServer) -> dict[str, str]:
    """An invoker key of each priority in ``default``: low over the HTTP API, critical with
    the CLI, normal by default."""
    _, low = grpc_server.mint_key("default", "invoker", priority="low",
                                  description="batch scoring")
    _, normal = grpc_server.mint_key("default", "invoker")
    created = grpc_server.cli("keys", "create", "--namespace", "default", "--role", "invoker",
                              "--priority", "critical", "--description", "checkout")
    assert "critical priority" in created.stderr
    critical = created.stdout.strip().splitlines()[-1]
    return {"low": low, "normal": normal, "critical": critical}


def _access(server: StratusServer, deployment: str) -> dict[str, dict[str, Any]]:
    """The access lines of ``deployment``, by request id."""
    path = server.data_dir / "logs" / "server.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()
             if '"logger":"stratus.access"' in line and f'"deployment":"{deployment}"' in line]
    return {line["request_id"]: line for line in lines}


def _ended(server: StratusServer, invocation_id: str) -> dict[str, Any]:
    """The async invocation once it has succeeded or is dead."""
    def check() -> dict[str, Any] | None:
        view: dict[str, Any] = server.http.get(f"/api/invocations/{invocation_id}").json()
        return view if view["status"] in ("succeeded", "dead") else None

    return wait_for(check, 15, f"invocation {invocation_id} to end")


def test_keys_are_listed_with_their_priority_and_a_bad_one_is_a_400(
        grpc_server: StratusServer, keys: dict[str, str]) -> None:
    listed = {key["id"]: key["priority"] for key in grpc_server.http.get("/api/keys").json()["keys"]}
    assert {listed[key[:15]] for key in keys.values()} == {"low", "normal", "critical"}
    assert listed[keys["critical"][:15]] == "critical" and listed[keys["low"][:15]] == "low"
    shown = json.loads(grpc_server.cli("keys", "ls", "--json").stdout)
    assert {key["id"]: key["priority"] for key in shown} == listed
    assert "PRIORITY" in grpc_server.cli("keys", "ls").stdout

    bad = grpc_server.http.post("/api/keys", json={"namespace": "default", "role": "invoker",
                                                   "priority": "urgent"})
    assert bad.status_code == 400, bad.text
    error = bad.json()["error"]
    assert error["type"] == "invalid_request" and "priority" in error["message"], error
    assert error["request_id"]
    refused = grpc_server.cli("keys", "create", "--namespace", "default", "--role", "invoker",
                              "--priority", "urgent", check=False)
    assert refused.returncode != 0 and "priority" in refused.stderr
    assert len(grpc_server.http.get("/api/keys").json()["keys"]) == len(listed)


def test_under_shedding_each_key_is_served_at_its_priority_and_never_above(
        grpc_server: StratusServer, keys: dict[str, str]) -> None:
    server = grpc_server
    server.deploy("basic", "app.py:AsyncEcho", name=SHED, min_replicas=1, max_replicas=1,
                  max_concurrency=10, max_queued=0, shedding=PINNED, ready=1)

    def invoke(key: str, request_id: str, headers: dict[str, str] | None = None,
               sleep: float = 0.0) -> int:
        with server.client_as(key) as http:
            return http.post(f"/api/deployments/{SHED}/invoke", json={"sleep": sleep},
                             headers={"x-request-id": request_id, **(headers or {})}).status_code

    def admitted() -> bool:
        return bool(server.status(SHED)["resilience"]["1"]["shedding"]["admitted"] == 9)

    with ThreadPoolExecutor(9) as pool:
        # The bootstrap key's requests are normal without a header: 9 fill normal's share.
        held = [pool.submit(invoke, server.key, f"kp-hold-{i}", None, 8.0) for i in range(9)]
        wait_for(admitted, 15, "9 admitted requests")
        probes = {  # request id: (key, header), each sent while the 9 are held
            "kp-normal-asks-critical": ("normal", "critical"),  # lowered to normal: shed
            "kp-low-asks-critical": ("low", "critical"),  # lowered to low: shed
            "kp-low": ("low", None),  # low by its key: shed
            "kp-critical-asks-low": ("critical", "low"),  # a key may ask for less: shed
            "kp-critical": ("critical", None),  # critical by its key: the tenth slot
        }
        statuses = {rid: invoke(keys[key], rid, {"x-stratus-priority": header} if header else None)
                    for rid, (key, header) in probes.items()}
        assert admitted(), "the held requests were still in when the probes ran"
        assert [future.result() for future in held] == [200] * 9
    assert statuses == {"kp-normal-asks-critical": 429, "kp-low-asks-critical": 429,
                        "kp-low": 429, "kp-critical-asks-low": 429, "kp-critical": 200}

    shed = server.status(SHED)["resilience"]["1"]["shedding"]["shed"]
    assert shed == {"low": 3, "normal": 1, "critical": 0}
    metrics = server.http.get("/metrics").text
    assert f'stratus_shed_requests_total{{deployment="{SHED}",namespace="default",' \
           f'priority="low",revision="1"}} 3.0' in metrics
    lines = wait_for(lambda: (found := _access(server, SHED)) and len(found) == 14 and found, 10,
                     "the access lines of the 14 requests")
    expected = {"kp-normal-asks-critical": "normal", "kp-low-asks-critical": "low",
                "kp-low": "low", "kp-critical-asks-low": "low", "kp-critical": "critical",
                **{f"kp-hold-{i}": "normal" for i in range(9)}}
    assert {rid: line["priority"] for rid, line in lines.items()} == expected
    assert {rid: lines[rid]["status"] for rid in probes} == statuses

    # Asynchronous invocations: the queue's integer priority keeps within the same ceiling.
    queued = {}
    for key, asked in [("low", "10"), ("normal", "10"), ("critical", None), ("critical", "7")]:
        with server.client_as(keys[key]) as http:
            answer = http.post(f"/api/deployments/{SHED}/invoke?mode=async", json={},
                               headers={"x-stratus-priority": asked} if asked else {})
        assert answer.status_code == 202, answer.text
        queued[(key, asked)] = server.http.get(
            f"/api/invocations/{answer.json()['id']}").json()["priority"]
    assert queued == {("low", "10"): -1, ("normal", "10"): 0, ("critical", None): 1,
                      ("critical", "7"): 7}
    server.delete(SHED)


def test_async_invocations_are_shed_at_the_priority_they_were_queued_at(
        grpc_server: StratusServer, keys: dict[str, str]) -> None:
    """The drain loop dispatches an invocation at the class of the integer it was queued at
    (within its key's ceiling), as its sync call would be: with normal's share of the limit
    full, a critical key's takes the tenth slot, and a low key's is shed before a normal one's."""
    server, name = grpc_server, "kp-async"
    # One attempt: a shed invocation is dead at once, with the overload as its error.
    server.deploy("basic", "app.py:AsyncEcho", name=name, min_replicas=1, max_replicas=1,
                  max_concurrency=10, max_queued=0, shedding=PINNED, ready=1,
                  async_invocations={"max_attempts": 1})

    def hold(index: int) -> int:
        return server.http.post(f"/api/deployments/{name}/invoke", json={"sleep": 8.0},
                                headers={"x-request-id": f"kp-async-hold-{index}"}).status_code

    def admitted() -> bool:
        return bool(server.status(name)["resilience"]["1"]["shedding"]["admitted"] == 9)

    asked = {"critical": ("critical", None), "normal-asks-5": ("normal", "5"),
             "low": ("low", None), "critical-asks--2": ("critical", "-2")}
    ended: dict[str, dict[str, Any]] = {}
    with ThreadPoolExecutor(9) as pool:
        held = [pool.submit(hold, i) for i in range(9)]  # normal: 9 fill normal's share
        wait_for(admitted, 15, "9 admitted requests")
        for label, (key, value) in asked.items():
            with server.client_as(keys[key]) as http:
                answer = http.post(f"/api/deployments/{name}/invoke?mode=async", json={},
                                   headers={"x-stratus-priority": value} if value else {})
            assert answer.status_code == 202, answer.text
            ended[label] = _ended(server, answer.json()["id"])
        assert admitted(), "the held requests were still in when the invocations ran"
        assert [future.result() for future in held] == [200] * 9
    assert {label: (view["status"], view["priority"]) for label, view in ended.items()} == {
        "critical": ("succeeded", 1), "normal-asks-5": ("dead", 0), "low": ("dead", -1),
        "critical-asks--2": ("dead", -2)}
    assert ended["low"]["error"]["type"] == "overloaded", ended["low"]
    shed = server.status(name)["resilience"]["1"]["shedding"]["shed"]
    assert shed == {"low": 2, "normal": 1, "critical": 0}
    lines = wait_for(lambda: (found := _access(server, name)) and len(found) == 13 and found, 10,
                     "the access lines of the 13 requests")
    assert {label: lines[view["id"]]["priority"] for label, view in ended.items()} == {
        "critical": "critical", "normal-asks-5": "normal", "low": "low",
        "critical-asks--2": "low"}
    server.delete(name)


def test_grpc_calls_get_the_same_ceiling(grpc_server: StratusServer,
                                         keys: dict[str, str]) -> None:
    name = "kp-grpc"
    grpc_server.deploy("basic", "app.py:Doubler", name=name, min_replicas=1, ready=1)
    tensor = triton.InferInput("x", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
    calls = {"kp-grpc-low-asks-critical": ("low", "critical"),
             "kp-grpc-critical": ("critical", None),
             "kp-grpc-normal-asks-low": ("normal", "low")}
    client = triton.InferenceServerClient(url=grpc_server.grpc_target)
    try:
        for rid, (key, asked) in calls.items():
            metadata = {"authorization": f"Bearer {keys[key]}", "x-request-id": rid}
            if asked:
                metadata["x-stratus-priority"] = asked
            served = client.infer(name, [tensor], headers=metadata)
            assert served.as_numpy("total").tolist() == [4.0]
    finally:
        client.close()
    lines = wait_for(lambda: (found := _access(grpc_server, name)) and len(found) == 3 and found,
                     10, "the access lines of the 3 calls")
    assert {rid: (line["protocol"], line["priority"]) for rid, line in lines.items()} == {
        "kp-grpc-low-asks-critical": ("grpc", "low"), "kp-grpc-critical": ("grpc", "critical"),
        "kp-grpc-normal-asks-low": ("grpc", "low")}
    grpc_server.delete(name)
