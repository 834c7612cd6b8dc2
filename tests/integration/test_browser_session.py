"""The browser session's cookie on a real server: how it is set, where it is accepted (the docs
and the dashboard's reads) and refused (the data plane, /v1, everything else), the CSRF check,
and a revoked key ending its sessions at once. The pages themselves: tests/e2e/test_docs.py."""

from __future__ import annotations

import httpx
import pytest

from server import StratusServer, wait_for
from stratus.gateway.browser import COOKIE

SAME_ORIGIN = {"sec-fetch-site": "same-origin"}


def signed_in(server: StratusServer, key: str) -> tuple[httpx.Response, str]:
    """Sign in as a browser would, and the cookie's value."""
    response = httpx.post(server.url + "/api/session", headers={"authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return response, response.cookies[COOKIE]


def with_cookie(server: StratusServer, token: str, **headers: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"cookie": f"{COOKIE}={token}", **headers},
                        timeout=30)


def test_sign_in_sets_a_secure_http_only_strict_cookie_that_is_not_the_key(
        server: StratusServer) -> None:
    key_id, key = server.mint_key("browser", "viewer")
    response, token = signed_in(server, key)
    header = response.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in header.split(";")}
    assert {"secure", "httponly", "max-age", "path"} <= attributes, header
    assert "samesite=strict" in header.lower()
    assert 0 < int(header.lower().split("max-age=")[1].split(";")[0]) <= 8 * 3600
    assert key not in token and key.split("_")[-1] not in token
    assert token.startswith(f"v1.{key_id}.")
    body = response.json()
    assert (body["actor"], body["namespace"], body["role"]) == (f"key:{key_id}", "browser", "viewer")
    with with_cookie(server, token) as browser:
        assert browser.get("/api/session").json()["expires_at"] == body["expires_at"]
        assert browser.get("/api/dashboard").status_code == 200
        assert browser.get("/openapi.json").status_code == 200


def test_the_cookie_is_refused_off_the_docs_and_dashboard_routes(server: StratusServer) -> None:
    server.deploy("basic", "app.py:Echo", name="cookie-echo", min_replicas=1, ready=1)
    _, token = signed_in(server, server.key)  # the bootstrap admin: allowed everything by bearer
    with with_cookie(server, token, **SAME_ORIGIN) as browser:
        assert browser.get("/api/deployments/cookie-echo").status_code == 200  # the dashboard's
        for method, path in (("POST", "/api/deployments/cookie-echo/invoke"),
                             ("POST", "/v1/chat/completions"), ("GET", "/v1/models"),
                             ("POST", "/v2/models/cookie-echo/infer"), ("GET", "/api/keys"),
                             ("GET", "/api/deployments"), ("GET", "/metrics"),
                             ("DELETE", "/api/deployments/cookie-echo")):
            refused = browser.request(method, path, json={})
            assert refused.status_code == 401, (method, path, refused.text)
    assert server.status("cookie-echo")["name"] == "cookie-echo"  # the DELETE did nothing


@pytest.mark.parametrize("headers", [
    {"sec-fetch-site": "cross-site", "origin": "https://evil.example"},
    {"sec-fetch-site": "same-site", "origin": "http://127.0.0.1:1"},  # another port: same site
    {"origin": "https://evil.example"},  # a browser without Fetch Metadata
    {},  # neither header: not provably from this origin
])
def test_a_state_change_by_cookie_from_elsewhere_is_a_csrf_403(
        server: StratusServer, headers: dict[str, str]) -> None:
    _, token = signed_in(server, server.key)
    with with_cookie(server, token, **headers) as browser:
        for method, path in (("DELETE", "/api/session"), ("POST", "/api/deployments"),
                             ("POST", "/api/keys")):
            refused = browser.request(method, path, json={"role": "admin"})
            assert refused.status_code == 403, (method, path, refused.text)
            assert refused.json()["error"]["type"] == "csrf_failed"
            assert "set-cookie" not in refused.headers
        assert browser.get("/api/session").status_code == 200, "the session was not ended"


def test_sign_out_from_the_page_clears_the_cookie(server: StratusServer) -> None:
    _, token = signed_in(server, server.key)
    origin = {"origin": server.url}  # no Fetch Metadata, but the Origin is the server's own
    for headers in (SAME_ORIGIN, origin):
        with with_cookie(server, token, **headers) as browser:
            out = browser.delete("/api/session")
            assert out.status_code == 200, out.text
            cleared = out.headers["set-cookie"]
            assert cleared.startswith(f"{COOKIE}=") and "max-age=0" in cleared.lower()
    with with_cookie(server, "v1.bootstrap.1.00000000." + "A" * 43, **SAME_ORIGIN) as browser:
        assert browser.delete("/api/session").status_code == 200, "a dead cookie is cleared too"


def test_a_revoked_key_ends_its_browser_sessions(server: StratusServer) -> None:
    key_id, key = server.mint_key("browser", "developer")
    _, token = signed_in(server, key)
    with with_cookie(server, token) as browser:
        assert browser.get("/api/dashboard").status_code == 200
        assert server.http.delete(f"/api/keys/{key_id}").status_code == 200
        refused = browser.get("/api/dashboard")
        assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]
        assert browser.get("/docs").status_code == 401


def test_a_forged_or_tampered_cookie_is_refused(server: StratusServer) -> None:
    key_id, key = server.mint_key("browser", "viewer")
    _, token = signed_in(server, key)
    version, _, expires, kid, mac = token.split(".")
    admin = server.mint_key("browser", "admin")[0]
    for forged in (f"{version}.{admin}.{expires}.{kid}.{mac}",  # another key's id
                   f"{version}.{key_id}.{int(expires) + 3600}.{kid}.{mac}",  # a longer life
                   f"{version}.bootstrap.{expires}.{kid}.{mac}", "garbage", key):
        with with_cookie(server, forged) as browser:
            assert browser.get("/api/dashboard").status_code == 401, forged


def test_a_jwt_or_no_credentials_cannot_sign_in(server: StratusServer) -> None:
    assert httpx.post(server.url + "/api/session").status_code == 401
    bad = httpx.post(server.url + "/api/session", headers={"authorization": "Bearer nope"})
    assert bad.status_code == 401 and "set-cookie" not in bad.headers


def test_root_redirects_to_the_dashboard_and_the_log_names_the_pages(server: StratusServer) -> None:
    home = httpx.get(server.url + "/", follow_redirects=False)
    assert home.status_code == 307 and home.headers["location"] == "/ui/"
    log = wait_for(lambda: "dashboard:" in server.log_tail(400) and server.log_tail(400), 10,
                   "the start-up log's dashboard line")
    assert f"{server.url}/ui/" in log and f"{server.url}/docs" in log
    assert f"{server.url}/redoc" in log


def test_a_browser_without_a_session_is_sent_to_sign_in(server: StratusServer) -> None:
    for page in ("/docs", "/redoc"):
        sent = httpx.get(server.url + page, headers={"accept": "text/html"}, follow_redirects=False)
        assert sent.status_code == 303 and sent.headers["location"] == f"/ui/?next={page}"
        assert httpx.get(server.url + page).status_code == 401  # an API client: the JSON error


def test_the_schema_names_the_credentials_each_route_takes(server: StratusServer) -> None:
    document = server.http.get("/openapi.json").json()
    assert set(document["components"]["securitySchemes"]) == {"bearer", "session"}
    paths = document["paths"]
    assert paths["/api/dashboard"]["get"]["security"] == [{"bearer": []}, {"session": []}]
    assert paths["/api/deployments"]["get"]["security"] == [{"bearer": []}]
    assert paths["/api/deployments/{name}/invoke"]["post"]["security"] == [{"bearer": []}]
    assert paths["/healthz"]["get"]["security"] == []
