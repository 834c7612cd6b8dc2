"""Every error case of the contract, against a real server and real replica processes.

Each bad request gets the documented JSON error and status, and nothing else breaks:
the replica that saw it (or its replacement) keeps serving.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from server import StratusServer, pid_alive, wait_for


def assert_error(response: httpx.Response, status: int, error_type: str) -> dict[str, str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    if response.url.path.startswith("/v2/"):  # the OIP v2 shape
        body = {"error": {"type": body["error_type"], "message": body["error"],
                          "request_id": body["request_id"]}}
    error: dict[str, str] = body["error"]
    assert error["type"] == error_type, error
    assert error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    return error


def test_malformed_json(server: StratusServer) -> None:
    server.deploy("basic", "app.py:Echo", name="err-json")
    for body in (b"{bad", b"[1, 2", b"\xff\xfe", b'{"a": NaN'[:6]):
        response = server.http.post("/api/deployments/err-json/invoke", content=body)
        assert_error(response, 400, "invalid_json")
    assert server.invoke("err-json", {"fine": True}).status_code == 200


def test_malformed_deploy_spec(server: StratusServer) -> None:
    response = server.http.post("/api/deployments", content=b"{nope",
                                headers={"content-type": "application/json"})
    assert_error(response, 400, "invalid_json")
    response = server.http.post("/api/deployments", content=b"{nope")
    assert_error(response, 400, "invalid_request")
    response = server.http.post("/api/deployments", json={"code": {"bundle": "zz", "entrypoint": "a"}})
    assert_error(response, 400, "invalid_request")
    response = server.http.post("/api/deployments", json={"code": {"bundle": "0" * 64,
                                                                   "entrypoint": "app.py:X"}})
    error = assert_error(response, 404, "not_found")
    assert "not been uploaded" in error["message"]
    response = server.deploy_raw("basic", "app.py:Echo", name="Bad_Name")
    assert_error(response, 400, "invalid_request")
    response = server.deploy_raw("basic", "app.py:Echo", name="err-spec", max_replicas=0)
    assert_error(response, 400, "invalid_request")


def test_unknown_deployment_and_route(server: StratusServer) -> None:
    assert_error(server.invoke("no-such-thing", {}), 404, "not_found")
    assert_error(server.http.get("/api/deployments/no-such-thing"), 404, "not_found")
    assert_error(server.http.get("/v2/models/no-such-thing"), 404, "not_found")
    assert_error(server.http.post("/v2/models/no-such-thing/infer", json={"inputs": []}), 404,
                 "not_found")
    assert_error(server.http.get("/api/nothing-here"), 404, "not_found")
    assert_error(server.http.put("/api/deployments"), 405, "method_not_allowed")


def test_oversized_body_is_refused_before_reaching_a_replica(server: StratusServer) -> None:
    server.deploy("basic", "app.py:Echo", name="err-big")
    big = b'{"x": "' + b"a" * (2 * 1024 * 1024) + b'"}'  # the test server allows 1 MiB
    assert_error(server.http.post("/api/deployments/err-big/invoke", content=big), 413,
                 "payload_too_large")

    def chunks() -> object:
        yield b'{"x": "'
        for _ in range(40):
            yield b"a" * 65536
        yield b'"}'

    chunked = server.http.post("/api/deployments/err-big/invoke", content=chunks())
    assert_error(chunked, 413, "payload_too_large")
    assert server.invoke("err-big", {"x": "small"}).status_code == 200


def test_handler_that_raises_gives_500_without_a_trace(server: StratusServer) -> None:
    server.deploy("basic", "app.py:Faulty", name="err-raise", max_replicas=1)
    first = server.invoke("err-raise", {"action": "ok"}).json()["pid"]
    response = server.invoke("err-raise", {"action": "raise"})
    error = assert_error(response, 500, "handler_error")
    assert "ValueError: boom" in error["message"]
    assert "Traceback" not in response.text
    assert response.headers["x-stratus-revision"] == "1"
    debug = server.invoke("err-raise", {"action": "raise"}, headers={"x-stratus-debug": "true"})
    assert "Traceback" in debug.json()["error"]["detail"]  # admins may ask for the trace
    after = server.invoke("err-raise", {"action": "ok"})
    assert after.status_code == 200 and after.json()["pid"] == first  # same replica, still up
    logs = server.http.get("/api/deployments/err-raise/logs").text
    assert "ValueError: boom" in logs


def test_unencodable_output_is_the_handlers_fault(server: StratusServer) -> None:
    server.deploy("basic", "app.py:Faulty", name="err-encode")
    error = assert_error(server.invoke("err-encode", {"action": "unencodable"}), 500,
                         "unencodable_output")
    assert "JSON" in error["message"]
    assert_error(server.invoke("err-encode", {"action": "nan"}), 500, "unencodable_output")
    assert server.invoke("err-encode", {"action": "ok"}).status_code == 200


def test_handler_that_hangs_times_out_and_the_replica_is_replaced(server: StratusServer) -> None:
    server.deploy("basic", "app.py:Faulty", name="err-hang", timeout_s=1.0, max_concurrency=2,
                  max_replicas=1, min_replicas=1)
    pid = server.wait_ready("err-hang")["replicas"]["items"][0]["pid"]
    started = time.monotonic()
    response = server.invoke("err-hang", {"action": "hang"})
    elapsed = time.monotonic() - started
    error = assert_error(response, 504, "timeout")
    assert "1s" in error["message"]
    assert 0.9 < elapsed < 10
    # The stuck handler still holds a slot; the other slot keeps serving meanwhile.
    assert server.invoke("err-hang", {"action": "ok"}).status_code == 200
    # After a grace period the stuck replica is killed and replaced.
    wait_for(lambda: not pid_alive(pid), 30, "the stuck replica to be killed")

    def replaced() -> bool:
        items = server.status("err-hang")["replicas"]["items"]
        return bool(items) and all(i["pid"] != pid and i["state"] == "ready" for i in items)

    wait_for(replaced, 30, "a replacement replica")
    assert server.invoke("err-hang", {"action": "ok"}).status_code == 200


def test_replica_that_stops_heartbeating_is_replaced(server: StratusServer) -> None:
    # The test server declares a replica dead after 4 s without a heartbeat.
    server.deploy("basic", "app.py:LoopBlocker", name="err-silent", timeout_s=60, max_replicas=1)
    pid = server.invoke("err-silent", {}).json()["pid"]
    started = time.monotonic()
    error = assert_error(server.invoke("err-silent", {"block": 30}), 502, "replica_failed")
    assert "no heartbeat" in error["message"]
    assert time.monotonic() - started < 20
    after = server.invoke("err-silent", {})
    assert after.status_code == 200 and after.json()["pid"] != pid


def test_async_handler_past_its_timeout_is_cancelled_and_the_replica_kept(
        server: StratusServer) -> None:
    server.deploy("basic", "app.py:AsyncEcho", name="err-async-hang", timeout_s=1.0,
                  max_replicas=1, min_replicas=1)
    pid = server.wait_ready("err-async-hang")["replicas"]["items"][0]["pid"]
    assert_error(server.invoke("err-async-hang", {"sleep": 60}), 504, "timeout")
    time.sleep(7)  # past the stuck-handler grace: a cancelled handler frees its slot
    items = server.status("err-async-hang")["replicas"]["items"]
    assert [(item["pid"], item["inflight"]) for item in items] == [(pid, 0)]
    assert server.invoke("err-async-hang", {"n": 1}).status_code == 200


def test_handler_that_crashes_gives_502_and_a_replacement(server: StratusServer) -> None:
    server.deploy("basic", "app.py:Faulty", name="err-crash", max_replicas=1)
    first = server.invoke("err-crash", {"action": "ok"}).json()["pid"]
    error = assert_error(server.invoke("err-crash", {"action": "crash"}), 502, "replica_failed")
    assert "exited with code 3" in error["message"]
    error = assert_error(server.invoke("err-crash", {"action": "segfault"}), 502, "replica_failed")
    assert "signal 11" in error["message"]
    after = server.invoke("err-crash", {"action": "ok"})
    assert after.status_code == 200
    assert after.json()["pid"] != first


def test_handler_that_leaks_is_stopped_at_its_memory_limit(server: StratusServer) -> None:
    server.deploy("basic", "app.py:Faulty", name="err-leak", memory_mb=200, max_replicas=1)
    statuses = []
    for _ in range(6):
        response = server.invoke("err-leak", {"action": "leak", "mb": 64, "hold": 1.0})
        statuses.append(response.status_code)
        if response.status_code != 200:
            error = assert_error(response, 500, "out_of_memory")
            assert "memory limit of 200 MB" in error["message"]
            break
    assert statuses[-1] == 500, statuses
    after = server.invoke("err-leak", {"action": "ok"})
    assert after.status_code == 200, after.text


def test_init_failure_is_reported_and_backs_off(server: StratusServer) -> None:
    view = server.deploy("basic", "app.py:BadInit", name="err-init", min_replicas=1)
    assert view["revision"] == 1

    def failed() -> dict[str, object] | None:
        status = server.status("err-init")
        return status if status["status"] == "failed" else None

    status = wait_for(failed, 30, "the deployment to report its init failure")
    assert "model weights missing" in str(status["reason"])
    assert "RuntimeError" in status["last_error"]["detail"]
    response = server.invoke("err-init", {})
    error = assert_error(response, 503, "deployment_failed")
    assert "model weights missing" in error["message"]
    assert int(response.headers["retry-after"]) >= 1
    time.sleep(3)
    attempts = server.status("err-init")["last_error"]["attempts"]
    assert attempts <= 4, f"{attempts} init attempts in ~3s: restarts must back off"


def test_init_failure_on_a_cold_start_fails_the_held_request_fast(server: StratusServer) -> None:
    server.deploy("basic", "app.py:BadInit", name="err-cold-init", min_replicas=0)
    started = time.monotonic()
    error = assert_error(server.invoke("err-cold-init", {}), 503, "deployment_failed")
    assert time.monotonic() - started < 10
    assert "model weights missing" in error["message"]


def test_import_failure_fails_the_deploy(server: StratusServer) -> None:
    response = server.deploy_raw("broken_import", "app.py:Model", name="err-import")
    error = assert_error(response, 400, "deploy_error")
    assert "definitely_not_an_installed_module" in error["message"]
    assert server.http.get("/api/deployments/err-import").status_code == 404
    response = server.deploy_raw("basic", "app.py:Missing", name="err-missing")
    assert "no attribute 'Missing'" in assert_error(response, 400, "deploy_error")["message"]
    response = server.deploy_raw("basic", "app.py:_leaked", name="err-notcallable")
    assert_error(response, 400, "deploy_error")


def test_queue_bound_sheds_with_429_and_retry_after(server: StratusServer) -> None:
    server.deploy("basic", "app.py:Echo", name="err-shed", max_concurrency=1, max_replicas=1,
                  min_replicas=1, max_queued=2)
    server.wait_ready("err-shed")

    async def flood() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30,
                                     headers={"authorization": f"Bearer {server.key}"}) as client:
            calls = [client.post("/api/deployments/err-shed/invoke", json={"sleep": 0.5})
                     for _ in range(8)]
            return await asyncio.gather(*calls)

    responses = asyncio.run(flood())
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) == 3, codes  # one running and two queued
    shed = [r for r in responses if r.status_code == 429]
    assert len(shed) == 5
    for response in shed:
        assert_error(response, 429, "overloaded")
        assert int(response.headers["retry-after"]) >= 1
