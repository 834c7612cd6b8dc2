"""Deploy and invoke through a real server: handler shapes, headers, concurrency, auth."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from server import StratusServer


def test_deploy_and_invoke_class_handler(server: StratusServer) -> None:
    view = server.deploy("basic", "app.py:Echo", name="inv-echo", config={"k": "v"},
                         env={"GREETING": "hi"})
    assert view["revision"] == 1
    assert view["handler"]["kind"] == "class"
    response = server.invoke("inv-echo", {"a": [1, 2, 3]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["echo"] == {"a": [1, 2, 3]}
    assert body["config"] == {"k": "v"}
    assert body["greeting"] == "hi"
    assert body["revision"] == 1
    assert body["cwd_has_app"] is True  # replicas run in their bundle's directory
    assert response.headers["x-stratus-revision"] == "1"
    assert response.headers["x-stratus-cold-start"] == "true"
    assert response.headers["x-request-id"]
    again = server.invoke("inv-echo", {"b": 1})
    assert again.headers["x-stratus-cold-start"] == "false"
    assert again.json()["pid"] == body["pid"]


def test_decorator_name_is_used_when_none_is_given(server: StratusServer) -> None:
    view = server.deploy("basic", "app.py:Echo")
    assert view["name"] == "echo"
    assert view["runtime"]["max_concurrency"] == 8  # from @stratus.deployment


def test_min_replicas_zero_starts_nothing_until_the_first_request(server: StratusServer) -> None:
    view = server.deploy("basic", "app.py:Echo", name="inv-lazy", min_replicas=0)
    assert view["replicas"]["ready"] == view["replicas"]["starting"] == 0
    assert server.status("inv-lazy")["replicas"]["items"] == []
    assert server.invoke("inv-lazy", {"x": 1}).status_code == 200
    assert server.status("inv-lazy")["replicas"]["ready"] == 1


def test_request_id_is_echoed_and_honoured(server: StratusServer) -> None:
    server.deploy("basic", "app.py:Echo", name="inv-rid")
    response = server.invoke("inv-rid", {}, headers={"x-request-id": "my-trace-123"})
    assert response.headers["x-request-id"] == "my-trace-123"


def test_async_handler(server: StratusServer) -> None:
    server.deploy("basic", "app.py:AsyncEcho", name="inv-async", max_concurrency=50)
    response = server.invoke("inv-async", {"sleep": 0.01, "n": 5})
    assert response.status_code == 200
    assert response.json()["echo"] == {"sleep": 0.01, "n": 5}


def test_lambda_handler_maps_status_headers_and_body(server: StratusServer) -> None:
    view = server.deploy("basic", "app.py:handler", name="inv-lambda")
    assert view["handler"]["kind"] == "lambda"
    response = server.invoke("inv-lambda", {"name": "ada", "status": 202},
                             headers={"x-request-id": "rid-1"})
    assert response.status_code == 202
    assert response.headers["x-handler"] == "lambda"
    assert response.json() == {"hello": "ada", "request_id": "rid-1", "function": "inv-lambda",
                               "remaining_ms_positive": True}
    assert response.headers["x-stratus-revision"] == "1"


def test_lambda_handler_plain_text_body(server: StratusServer) -> None:
    server.deploy("basic", "app.py:plain_text", name="inv-text")
    response = server.invoke("inv-text", {})
    assert response.status_code == 201
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "created"


def test_empty_body_is_an_empty_event(server: StratusServer) -> None:
    server.deploy("basic", "app.py:Echo", name="inv-empty")
    response = server.http.post("/api/deployments/inv-empty/invoke", content=b"")
    assert response.status_code == 200
    assert response.json()["echo"] == {}


def test_two_hundred_concurrent_invokes(server: StratusServer) -> None:
    server.deploy("basic", "app.py:Echo", name="inv-burst", max_concurrency=8, max_replicas=4,
                  min_replicas=1)
    server.wait_ready("inv-burst")

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60,
                                     headers={"authorization": f"Bearer {server.key}"}) as client:
            calls = [client.post("/api/deployments/inv-burst/invoke", json={"i": i, "sleep": 0.02})
                     for i in range(200)]
            return await asyncio.gather(*calls)

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 200
    assert sorted(r.json()["echo"]["i"] for r in responses) == list(range(200))
    replicas = {r.json()["replica"] for r in responses}
    assert len(replicas) > 1, "the burst should have scaled the deployment out"
    assert len(replicas) <= 4


def test_list_and_get_and_delete(server: StratusServer) -> None:
    server.deploy("basic", "app.py:Echo", name="inv-crud")
    names = [d["name"] for d in server.http.get("/api/deployments").json()["deployments"]]
    assert "inv-crud" in names
    view: dict[str, Any] = server.status("inv-crud")
    for field in ("ready", "starting", "draining"):
        assert isinstance(view["replicas"][field], int)
    assert server.http.delete("/api/deployments/inv-crud").status_code == 200
    assert server.http.get("/api/deployments/inv-crud").status_code == 404
    gone = server.invoke("inv-crud", {})
    assert gone.status_code == 404
    assert gone.json()["error"]["type"] == "not_found"


def test_auth_is_required_except_for_health(server: StratusServer) -> None:
    anonymous = httpx.Client(base_url=server.url)
    for path in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"):
        assert anonymous.get(path).status_code == 200, path
    for method, path in (("GET", "/api/deployments"), ("POST", "/api/deployments/x/invoke"),
                         ("GET", "/v2/models/x"), ("GET", "/openapi.json"),
                         ("POST", "/v2/models/x/infer")):
        response = anonymous.request(method, path)
        assert response.status_code == 401, path
        body = response.json()
        if path.startswith("/v2/"):  # the OIP v2 error shape
            assert body["error_type"] == "unauthorized" and isinstance(body["error"], str)
        else:
            assert body["error"]["type"] == "unauthorized"
            assert body["error"]["request_id"] == response.headers["x-request-id"]
    wrong = anonymous.get("/api/deployments", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401


def test_openapi_lists_the_contract_routes(server: StratusServer) -> None:
    paths = server.http.get("/openapi.json").json()["paths"]
    for path in ("/api/deployments", "/api/deployments/{name}", "/api/deployments/{name}/invoke",
                 "/v2/models/{name}/infer", "/v2/models/{name}/ready", "/healthz"):
        assert path in paths, path
