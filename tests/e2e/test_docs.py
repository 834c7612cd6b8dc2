"""The API docs in a real browser: Swagger UI and ReDoc render from the server alone (no CDN),
behind the dashboard's sign-in, and "Try it out" works with the session cookie; a form posted
from another origin with that cookie is refused as CSRF."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import Browser, Page, Request, Response, Route, expect
from test_dashboard import browser

from server import StratusServer, free_port
from stratus.gateway.browser import COOKIE

__all__ = ["browser"]  # the fixture, shared with the dashboard's tests


class Watched:
    """Every request the page made, those the page's policy stopped in the browser, and those
    aimed off the server (aborted)."""

    def __init__(self, page: Page, server: StratusServer) -> None:
        self.requests: list[str] = []
        self.blocked: list[str] = []  # by the Content-Security-Policy: never sent
        self.offsite: list[str] = []
        self.server = server
        page.on("request", self._seen)
        page.on("requestfailed", self._failed)
        page.route("**/*", self._route)

    def _seen(self, request: Request) -> None:
        self.requests.append(request.url)

    def _failed(self, request: Request) -> None:
        if request.failure in ("csp", "net::ERR_BLOCKED_BY_CSP"):  # Chromium reports "csp"
            self.blocked.append(request.url)

    def _route(self, route: Route) -> None:
        if route.request.url.startswith(self.server.url + "/"):
            route.continue_()
        else:
            self.offsite.append(route.request.url)
            route.abort()

    def left_the_server(self) -> list[str]:
        return self.offsite + [url for url in self.requests if url not in self.blocked
                               and not url.startswith((self.server.url + "/", "blob:", "data:"))]


def sign_in_for(page: Page, server: StratusServer, docs_page: str) -> None:
    """Open a docs page as a new visitor: the sign-in comes first, then the page."""
    page.goto(server.url + docs_page)
    expect(page).to_have_url(f"{server.url}/ui/?next={docs_page}")
    page.fill("#api-key", server.key)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(server.url + docs_page)


def _listing_of(server: StratusServer) -> Callable[[Response], bool]:
    """The answer to Swagger UI's GET /api/deployments (its "Execute")."""
    url = server.url + "/api/deployments"
    return lambda response: response.url.split("?")[0] == url and response.request.method == "GET"


def test_swagger_ui_renders_offline_and_tries_a_get_with_the_session(
        server: StratusServer, browser: Browser) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    watched = Watched(page, server)
    sign_in_for(page, server, "/docs")
    cookie = next(c for c in page.context.cookies() if c["name"] == COOKIE)
    assert (cookie["httpOnly"], cookie["secure"], cookie["sameSite"]) == (True, True, "Strict")
    assert server.key not in cookie["value"]
    assert page.evaluate("document.cookie") == "", "the page's scripts cannot read the session"

    operation = page.locator("#operations-dashboard-dashboard_api_dashboard_get")
    operation.wait_for(timeout=20_000)  # Swagger UI fetched /openapi.json with the cookie
    assert page.locator(".opblock").count() > 50
    operation.locator(".opblock-summary").click()
    operation.locator("button.try-out__btn").click()
    operation.locator("button.execute").click()
    status = operation.locator(".live-responses-table tbody .response-col_status").first
    expect(status).to_have_text("200", timeout=10_000)
    expect(operation.locator(".live-responses-table tbody .response-col_description")).to_contain_text(
        '"deployments"')

    # A route the session does not open answers 401 until a key is given to "Authorize".
    listing = page.locator("[id$='-list_deployments_api_deployments_get']")
    listing.locator(".opblock-summary").click()
    listing.locator("button.try-out__btn").click()
    with page.expect_response(_listing_of(server)) as first:
        listing.locator("button.execute").click()
    assert "authorization" not in first.value.request.all_headers()
    assert first.value.status == 401, first.value.text()
    listed = listing.locator(".live-responses-table tbody .response-col_status").first
    expect(listed).to_have_text("401", timeout=10_000)
    page.locator(".auth-wrapper button.authorize").click()
    bearer = page.locator(".auth-container").filter(has_text="bearer")
    bearer.locator("input").fill(server.key)
    bearer.locator("button.authorize").click()
    # The key is applied once the modal offers to remove it.
    expect(bearer.get_by_role("button", name="Remove authorization")).to_be_visible()
    page.locator(".modal-ux button.btn-done").first.click()
    expect(page.locator(".modal-ux")).to_have_count(0)
    # Cleared, so that the status cell below can only be the second answer's: the page keeps
    # showing the first until it has drawn the second.
    listing.locator("button.btn-clear").click()
    expect(listing.locator(".live-responses-table")).to_have_count(0)
    with page.expect_response(_listing_of(server)) as second:
        listing.locator("button.execute").click()
    assert second.value.request.all_headers().get("authorization") == f"Bearer {server.key}"
    assert second.value.status == 200, second.value.text()
    expect(listed).to_have_text("200", timeout=10_000)
    # As plain text: highlighting the listing of a large fleet froze the page for seconds,
    # and the status cell showed the previous answer meanwhile (docs.SWAGGER_PARAMETERS).
    body = listing.locator(".live-responses-table .response-col_description pre").first
    expect(body).to_contain_text('"deployments"')
    expect(body.locator("span")).to_have_count(0)
    assert watched.left_the_server() == []
    page.close()


def test_redoc_renders_offline(server: StratusServer, browser: Browser) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    watched = Watched(page, server)
    sign_in_for(page, server, "/redoc")
    expect(page.get_by_role("heading", name="Every deployment at a glance")).to_be_visible(
        timeout=20_000)
    expect(page.locator("h1").first).to_contain_text("Stratus")
    assert watched.left_the_server() == []
    # ReDoc's sidebar asks for its vendor's logo on a CDN: the page's policy stops it unsent.
    assert all(url.startswith("https://cdn.redoc.ly/") for url in watched.blocked), watched.blocked
    page.close()


class _Attacker(BaseHTTPRequestHandler):
    """Another origin on the same host (so the same site: the Strict cookie still goes along)
    with a page that posts a form to the server as soon as it loads."""

    target = ""

    def do_GET(self) -> None:
        body = (f'<form id="f" method="post" action="{self.target}/api/keys">'
                '<input name="role" value="admin"></form>'
                '<script>document.getElementById("f").submit()</script>').encode()
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def attacker(server: StratusServer) -> Iterator[str]:
    handler = type("Handler", (_Attacker,), {"target": server.url})
    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def test_a_form_posted_from_another_origin_is_refused(
        server: StratusServer, browser: Browser, attacker: str) -> None:
    page = browser.new_page()
    sign_in_for(page, server, "/docs")
    keys_before = server.http.get("/api/keys").json()
    page.goto(attacker)
    page.wait_for_url(server.url + "/api/keys")
    body = page.locator("body").text_content() or ""
    assert "csrf_failed" in body, body  # the cookie went along, and was refused for it
    assert server.http.get("/api/keys").json() == keys_before
    page.close()
