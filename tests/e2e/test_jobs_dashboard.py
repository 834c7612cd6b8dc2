"""Jobs on the dashboard, in a real browser: a finished run reached from the jobs list, with a
chart per metric curve, its parameters and final metrics."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Browser, Route, expect
from test_dashboard import browser

from server import StratusServer, wait_for

__all__ = ["browser"]  # the fixture, shared with the dashboard's tests


def _trained(server: StratusServer) -> dict[str, Any]:
    digest = server.upload("jobs")
    response = server.http.post("/api/jobs", json={
        "code": {"bundle": digest, "entrypoint": "train.py:train_mlp"},
        "params": {"epochs": 5, "lr": 0.05}, "experiment": "ui-curves"})
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]

    def ended() -> dict[str, Any] | None:
        view: dict[str, Any] = server.http.get(f"/api/jobs/{job_id}").json()
        return view if view["status"] in ("succeeded", "failed", "cancelled") else None

    view = wait_for(ended, 120, "the job to end")
    assert view["status"] == "succeeded", view
    return view


def test_a_run_shows_its_metric_curves(server: StratusServer, browser: Browser) -> None:
    job = _trained(server)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    offsite: list[str] = []

    def only_local(route: Route) -> None:
        if route.request.url.startswith(server.url):
            route.continue_()
        else:
            offsite.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    page.goto(server.url + "/ui/")
    page.fill("#api-key", server.key)
    page.click("#login-form button[type=submit]")
    page.click("header a[href='#/jobs']")
    page.fill("#j-experiment", "ui-curves")
    page.press("#j-experiment", "Enter")
    link = page.locator(f"#j-list a[href='#/j/{job['id']}']")
    link.wait_for(timeout=10_000)
    link.click()
    expect(page.locator("#j-status")).to_have_text("succeeded")
    expect(page.locator("#j-epoch")).to_have_text("5 / 5")
    for metric in ("loss", "accuracy", "lr"):
        curve = page.locator(f"#j-curves .curve[data-metric='{metric}'] canvas")
        curve.wait_for(timeout=10_000)
    legend = page.locator("#j-curves .curve[data-metric='loss'] .u-legend")
    expect(legend).to_contain_text("loss")
    expect(page.locator("#j-params")).to_contain_text("epochs")
    expect(page.locator("#j-metrics")).to_contain_text("accuracy")
    expect(page.locator("#j-logs")).to_contain_text("first line of train_mlp")
    assert offsite == []
