"""The dashboard in a real browser: Debian's Chromium driven by Playwright against a real server."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from server import StratusServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps dialling Google on a closed network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
NO_VALUE = "\u2013"  # the en dash the page shows for a value it does not have
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


@pytest.fixture
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).is_file():
        pytest.skip("Debian's chromium is not installed (`make test` installs it with apt-get)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def burst(server: StratusServer, name: str, threads: int, seconds: float) -> threading.Thread:
    """``threads`` clients, each invoking back to back for ``seconds``: a few seconds of load
    so the charts draw more than one point."""
    def client() -> None:
        end = time.monotonic() + seconds
        with httpx.Client(base_url=server.url, timeout=30,
                          headers={"authorization": f"Bearer {server.key}"}) as http:
            while time.monotonic() < end:
                assert http.post(f"/api/deployments/{name}/invoke", json={"sleep": 0.3}).status_code == 200

    def run() -> None:
        workers = [threading.Thread(target=client) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    runner = threading.Thread(target=run)
    runner.start()
    return runner


def test_static_files_need_no_key_and_the_api_does(server: StratusServer) -> None:
    for path in ("/ui/", "/ui/app.js", "/ui/style.css", "/ui/vendor/uPlot.iife.min.js"):
        assert httpx.get(server.url + path).status_code == 200, path
    assert httpx.get(server.url + "/ui", follow_redirects=False).headers["location"] == "/ui/"
    assert httpx.get(server.url + "/api/dashboard").status_code == 401
    assert httpx.get(server.url + "/ui/missing.js").status_code == 404
    assert httpx.get(server.url + "/uiadmin").status_code == 401, "only /ui and /ui/... are open"


def test_dashboard_routes_count_what_was_sent(server: StratusServer) -> None:
    name = "dash-faulty"
    server.deploy("basic", "app.py:Faulty", name=name, min_replicas=1, ready=1)
    for action in ["ok"] * 6 + ["raise"] * 2:
        server.invoke(name, {"action": action})
    time.sleep(0.6)  # a sampler pass or two for the gauges
    rows = server.http.get("/api/dashboard", params={"window": 120}).json()["deployments"]
    row = next(row for row in rows if row["name"] == name)
    assert (row["requests"], row["errors"], row["error_ratio"]) == (8, 2, 0.25)
    assert row["replicas"]["ready"] == 1 and row["p50_ms"] is not None
    points = server.http.get(f"/api/deployments/{name}/series", params={"window": 120}).json()
    assert len(points["t"]) == 120 and sum(points["requests"]) == 8 and sum(points["errors"]) == 2
    assert points["ready"][-1] == 1
    recent = server.http.get(f"/api/deployments/{name}/invocations").json()["invocations"]
    assert [entry["status"] for entry in recent[:3]] == [500, 500, 200]
    assert server.http.get("/api/deployments/nope/series").status_code == 404


def test_dashboard_shows_autoscaling(server: StratusServer, browser: Browser) -> None:
    name = "dash-echo"
    server.deploy("basic", "app.py:Echo", name=name, min_replicas=0, max_replicas=4)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    offsite: list[str] = []

    def only_local(route: Route) -> None:
        if route.request.url.startswith(server.url):
            route.continue_()
        else:  # no CDN, no network: everything ships inside the package
            offsite.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    page.goto(server.url + "/ui/")
    page.fill("#api-key", server.key)
    page.click("#login-form button[type=submit]")
    row = page.locator(f'#deployments tr[data-deployment="{name}"]')
    row.wait_for(timeout=10_000)
    # Signed in by the session cookie, which the page cannot read; the key is not kept.
    assert page.evaluate("sessionStorage.getItem('stratus.apiKey')") is None
    assert page.evaluate("document.cookie") == ""
    expect(row.locator("td.replicas")).to_have_attribute("data-ready", "0")

    row.locator("a").click()
    expect(page.locator("#d-name")).to_have_text(name)
    ready = page.locator("#stat-ready")
    expect(ready).to_have_text("0")

    load = burst(server, name, threads=40, seconds=4.0)
    seen = {0}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and max(seen) < 2:  # the page's own count, not the API's
        text = ready.text_content() or ""
        if text.isdigit():
            seen.add(int(text))
        time.sleep(0.1)
    load.join()
    assert max(seen) >= 2, f"the page showed replica counts {sorted(seen)}"

    # Let the charts and tables catch up with the whole burst before the picture.
    page.wait_for_function(
        "document.querySelectorAll('#invocations tbody tr').length >= 25", timeout=10_000)
    time.sleep(2.5)
    assert page.locator("#chart-replicas canvas").count() == 1
    assert offsite == []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"dashboard screenshot: {shot}")

    page.click("#crumbs a")  # back to the list, which shows the burst's numbers
    expect(row.locator("td.replicas")).not_to_have_attribute("data-ready", "0")
    if server.http.get("/api/usage", params={"by": "deployment"}).status_code == 200:
        expect(row.locator("td.cost")).not_to_have_text(NO_VALUE)  # usage metering is there
    listed = ARTIFACTS / "dashboard-list.png"
    page.screenshot(path=str(listed))
    print(f"dashboard list screenshot: {listed}")
    page.close()


def sign_in(page: Page, server: StratusServer) -> None:
    page.goto(server.url + "/ui/")
    page.fill("#api-key", server.key)
    page.click("#login-form button[type=submit]")
    page.locator("#list-view").wait_for(timeout=10_000)


def test_a_deployment_that_is_not_there_shows_not_found(server: StratusServer,
                                                        browser: Browser) -> None:
    """Going from a deployment to one that does not exist leaves nothing of the first on screen."""
    name = "dash-there"
    server.deploy("basic", "app.py:Echo", name=name, min_replicas=1, ready=1)
    assert server.invoke(name, {"x": 1}).status_code == 200
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in(page, server)
    page.evaluate(f"location.hash = '#/d/{name}'")
    expect(page.locator("#d-name")).to_have_text(name)
    expect(page.locator("#stat-ready")).to_have_text("1")
    page.locator("#invocations tbody tr").first.wait_for(timeout=10_000)

    page.evaluate("location.hash = '#/d/no-such-deployment'")
    not_found = page.locator("#not-found")
    expect(not_found).to_be_visible(timeout=10_000)
    expect(page.locator("#nf-message")).to_contain_text("no-such-deployment")
    expect(page.locator("#detail-view")).to_be_hidden()
    time.sleep(1.5)  # a poll or two later, the first deployment has not come back
    expect(not_found).to_be_visible()
    expect(page.locator("#detail-view")).to_be_hidden()

    page.click("#nf-back")
    expect(page.locator(f'#deployments tr[data-deployment="{name}"]')).to_be_visible()
    page.evaluate(f"location.hash = '#/d/{name}'")  # and back to one that exists
    expect(page.locator("#d-name")).to_have_text(name)
    expect(page.locator("#not-found")).to_be_hidden()
    page.close()


def test_cold_starts_are_shown_as_the_two_counts_they_are(server: StratusServer,
                                                          browser: Browser) -> None:
    """Requests that waited for a replica to start, and replicas started, side by side."""
    name = "dash-cold"
    server.deploy("basic", "app.py:Echo", name=name, min_replicas=0, max_replicas=2)
    assert server.invoke(name, {}).headers["x-stratus-cold-start"] == "true"
    server.http.patch(f"/api/deployments/{name}", json={"min_replicas": 2})
    server.wait_ready(name, 2)  # a second replica, started with no request waiting for it
    row = next(d for d in server.http.get("/api/dashboard").json()["deployments"]
               if d["name"] == name)
    assert (row["cold_start_requests"], row["replica_starts"]) == (1, 2)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    sign_in(page, server)
    headers = page.locator("#deployments thead th")
    expect(headers.filter(has_text="Cold-start requests")).to_have_count(1)
    expect(headers.filter(has_text="Replica starts")).to_have_count(1)
    listed = page.locator(f'#deployments tr[data-deployment="{name}"]')
    expect(listed.locator("td.cold-requests")).to_have_text("1")
    expect(listed.locator("td.replica-starts")).to_have_text("2")
    listed.locator("a").click()
    expect(page.locator("#stat-cold")).to_have_text("1")
    expect(page.locator("#stat-starts")).to_have_text("2")
    page.close()
