"""A workflow execution on the dashboard, in a real browser: reached from the workflows list,
drawn as a graph whose boxes carry each step's state."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Route, expect
from test_dashboard import ARTIFACTS, browser

from server import StratusServer

__all__ = ["browser"]  # the fixture, shared with the dashboard's tests

DEFINITION = """\
name: wfui
steps:
  - {id: total, type: task, deployment: wfui-add, input: {a: 1, b: 2}}
  - id: fan
    type: parallel
    branches:
      - - {id: left, type: task, deployment: wfui-double, input: {value: 1}}
      - - {id: right, type: task, deployment: wfui-double, input: {value: 2}}
  - id: each
    type: map
    items: $.input.values
    step: {id: one, type: task, deployment: wfui-double, input: {value: $.item}}
  - {id: risky, type: task, deployment: wfui-fail, catch: {next: recover}}
  - {id: never, type: fail}
  - {id: recover, type: succeed}
"""


@pytest.fixture
def execution(server: StratusServer) -> Iterator[str]:
    for name, entry in (("wfui-add", "Add"), ("wfui-double", "Double"),
                        ("wfui-fail", "AlwaysFail")):
        server.deploy("workflows", f"app.py:{entry}", name=name, min_replicas=1, ready=1)
    response = server.http.post("/api/workflows", content=DEFINITION,
                                headers={"content-type": "application/yaml"})
    assert response.status_code in (200, 201), response.text
    run = server.http.post("/api/workflows/wfui/executions?wait=true", json={"values": [1, 2]})
    assert run.json()["status"] == "succeeded", run.text
    yield str(run.json()["id"])
    for name in ("wfui-add", "wfui-double", "wfui-fail"):
        server.delete(name)


def test_an_execution_is_drawn_as_a_graph_of_its_steps(
        server: StratusServer, browser: Browser, execution: str) -> None:
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
    page.click("header a[href='#/workflows']")
    link = page.locator(f"#wf-executions a[href='#/x/{execution}']")
    link.wait_for(timeout=10_000)
    link.click()
    graph = page.locator("#x-graph svg.wf-graph")
    graph.wait_for(timeout=10_000)
    expect(page.locator("#x-status")).to_have_text("succeeded")
    states = {"total": "succeeded", "fan": "succeeded", "left": "succeeded",
              "right": "succeeded", "each": "succeeded", "one": "succeeded",
              "risky": "caught", "never": "pending", "recover": "succeeded"}
    for step, state in states.items():
        box = graph.locator(f"g.box[data-step='{step}']")
        expect(box).to_have_attribute("data-state", state)
    assert graph.locator("path.edge.catch").count() == 1
    assert page.locator("#x-steps tbody tr").count() == 9  # 1 + 2 + 1 + 2 + 1 + 1 + 1
    assert offsite == []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = Path(ARTIFACTS) / "workflow-execution.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"workflow execution screenshot: {shot}")
    page.close()
