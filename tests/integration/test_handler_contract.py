"""The handler contract's edges on a real server: what a Lambda body's content type says, whose
fault output no protocol can carry is, the 405 of a wrong method on every invoke-like route,
handler tracebacks cut to the bundle, and what the server says at start about who runs
replicas."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import httpx
import pytest

from server import TEST_ENV, StratusServer, wait_for

LAMBDA = "ct-lambda"
AMOUNTS = "ct-amounts"


@pytest.fixture(scope="module")
def deployed(server: StratusServer) -> StratusServer:
    server.deploy("contract", "app.py:handler", name=LAMBDA, max_replicas=1)
    server.deploy("contract", "app.py:Amounts", name=AMOUNTS, max_replicas=1)
    return server


def _error(response: httpx.Response, status: int, error_type: str) -> dict[str, str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    path = response.url.path
    if path.startswith("/v2/"):  # the Open Inference Protocol's shape
        error = {"type": body["error_type"], "message": body["error"]}
    elif path.startswith("/v1/"):  # OpenAI's: its category as type, ours as code
        error = {**body["error"], "type": body["error"]["code"]}
        assert body["error"]["type"] == "invalid_request_error", body
    else:
        error = body["error"]
    assert error["type"] == error_type, body
    return error


# -- Lambda bodies ---------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "status", "content_type", "body"), [
    ("text", 200, "text/plain; charset=utf-8", b"hello, world"),
    # A string is text whatever it holds: application/json only ever labels encoded JSON.
    ("json-text", 200, "text/plain; charset=utf-8", b'{"hello": "world"}'),
    ("dict", 201, "application/json", b'{"hello": "world"}'),
    ("typed", 200, "application/json", b'{"a": 1}'),  # the handler's own header wins
    ("plain", 200, "application/json", b'{"plain": "plain"}'),
])
def test_a_lambda_body_is_labelled_by_what_it_is(deployed: StratusServer, kind: str, status: int,
                                                 content_type: str, body: bytes) -> None:
    response = deployed.invoke(LAMBDA, {"body": kind})
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == content_type
    assert response.content == body
    if content_type == "application/json":
        json.loads(response.content)


# -- output that cannot be encoded is the handler's fault ------------------------------------


@pytest.mark.parametrize(("name", "payload", "says"), [
    (AMOUNTS, {"action": "object"}, "object is not JSON serializable"),
    (AMOUNTS, {"action": "set"}, "set is not JSON serializable"),
    (LAMBDA, {"body": "set"}, "set is not JSON serializable"),
])
def test_unencodable_output_is_a_500(deployed: StratusServer, name: str, payload: dict[str, str],
                                     says: str) -> None:
    error = _error(deployed.invoke(name, payload), 500, "unencodable_output")
    assert says in error["message"]
    assert deployed.invoke(AMOUNTS, {"amount": "1.5"}).json() == {"cents": 150}


# -- a wrong method is a 405 with Allow ------------------------------------------------------


@pytest.mark.parametrize("path", [
    f"/api/deployments/{AMOUNTS}/invoke",
    "/api/deployments/no-such-deployment/invoke",
    f"/v2/models/{AMOUNTS}/infer",
    f"/v2/models/{AMOUNTS}/versions/1/infer",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
])
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_a_wrong_method_on_an_invoke_route_is_a_405(deployed: StratusServer, path: str,
                                                    method: str) -> None:
    response = deployed.http.request(method, path)
    error = _error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"
    assert method in error["message"]
    assert response.headers["x-request-id"]


def test_a_head_on_an_invoke_route_is_a_405_without_a_body(deployed: StratusServer) -> None:
    response = deployed.http.head(f"/api/deployments/{AMOUNTS}/invoke")
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert response.content == b""
    assert deployed.invoke(AMOUNTS, {"amount": "2"}).json() == {"cents": 200}  # still serving


def test_the_control_api_names_every_method_a_path_serves(deployed: StratusServer) -> None:
    response = deployed.http.put("/api/deployments")
    _error(response, 405, "method_not_allowed")
    assert set(response.headers["allow"].split(", ")) >= {"GET", "POST"}, response.headers
    response = deployed.http.post(f"/api/deployments/{AMOUNTS}/logs")
    _error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["allow"].split(", ")


# -- tracebacks show the handler's frames ----------------------------------------------------


def _assert_cut_to_the_bundle(trace: str) -> None:
    assert "Traceback (most recent call last)" in trace, trace
    assert 'File "app.py", line' in trace, trace
    assert 'File "lib/helpers.py", line' in trace, trace
    assert "in _cents" in trace and "ValueError: an amount has at most two decimals" in trace
    assert "stratus/runtime/" not in trace, trace
    assert "/bundles/" not in trace, trace


def test_a_handler_traceback_starts_at_the_handler(deployed: StratusServer) -> None:
    request_id = "ct-trace-" + os.urandom(4).hex()
    response = deployed.invoke(AMOUNTS, {"amount": "1.505"},
                               headers={"x-stratus-debug": "true", "x-request-id": request_id})
    error = _error(response, 500, "handler_error")
    _assert_cut_to_the_bundle(error["detail"])  # for an admin who asks

    def logged() -> str | None:
        text = deployed.cli("logs", AMOUNTS, "--tail", "200").stdout
        return text if "at most two decimals" in text else None

    _assert_cut_to_the_bundle(wait_for(logged, 30, "the handler's error in its log"))

    server_log = wait_for(lambda: request_id in deployed.log_tail(400) and deployed.log_tail(400),
                          30, "the error in the server's log")
    lines = server_log.splitlines()
    start = next(index for index, line in enumerate(lines) if request_id in line)
    _assert_cut_to_the_bundle("\n".join(lines[start:start + 30]))


def test_an_init_traceback_starts_at_the_handler(deployed: StratusServer) -> None:
    deployed.deploy("contract", "app.py:NotReady", name="ct-init", max_replicas=1)
    response = deployed.invoke("ct-init", {})
    assert response.status_code == 503, response.text

    def logged() -> str | None:
        text = deployed.cli("logs", "ct-init", "--tail", "200").stdout
        return text if "weights are missing" in text and "Traceback" in text else None

    trace = wait_for(logged, 30, "the init failure in the deployment's log")
    assert 'File "app.py", line' in trace and 'File "lib/helpers.py", line' in trace, trace
    assert "stratus/runtime/" not in trace and "/bundles/" not in trace, trace
    deployed.delete("ct-init")


def test_an_import_traceback_starts_at_the_bundle(deployed: StratusServer) -> None:
    digest = deployed.upload("broken_import")
    response = deployed.http.post(
        "/api/deployments", headers={"x-stratus-debug": "true"},
        json={"name": "ct-import", "code": {"bundle": digest, "entrypoint": "app.py:Model"}})
    error = _error(response, 400, "deploy_error")
    trace = error["detail"]
    assert trace.startswith("Traceback (most recent call last)"), trace
    assert 'File "app.py", line 3, in <module>' in trace, trace
    assert "ModuleNotFoundError: No module named 'definitely_not_an_installed_module'" in trace
    # Neither the loader's frames nor importlib's machinery above the user's module.
    assert "stratus/runtime/" not in trace and "importlib" not in trace, trace
    assert "/bundles/" not in trace, trace


# -- who runs replicas, said at start --------------------------------------------------------


def test_the_start_up_log_says_who_runs_replicas(server: StratusServer) -> None:
    log = server.log_path.read_text(errors="replace")
    assert "chmod" not in log
    if os.geteuid() == 0:
        assert "replicas run as a user of its own per namespace" in log, log[-3000:]
        assert "docs/security.md#users" in log


@pytest.mark.skipif(os.geteuid() != 0, reason="replicas run as root only under a root server")
def test_replicas_as_root_are_warned_of_with_the_way_out() -> None:
    base = Path(tempfile.mkdtemp(prefix="stratus-as-root-"))
    base.chmod(0o711)
    told = StratusServer(base / "data", TEST_ENV)
    told.data_dir.mkdir()
    (told.data_dir / "stratus.yaml").write_text("sandbox:\n  run_as: server\n")
    try:
        told.start()
        log = told.log_path.read_text(errors="replace")
        assert "WARNING" in log and "replicas run as root" in log, log
        assert "leave run_as unset" in log and "docs/security.md#users" in log, log
        assert "chmod" not in log
    finally:
        told.stop()
        shutil.rmtree(base, ignore_errors=True)
