"""Outlier ejection with real replicas: one that answers with errors, and one that hangs
(SIGSTOP), are ejected from the picker, probed once their back-off ends, and readmitted
when healthy; the state shows in the status API and /metrics."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from server import StratusServer, wait_for


def _item(server: StratusServer, name: str, pid: int) -> dict[str, Any]:
    items = server.status(name)["replicas"]["items"]
    (item,) = [i for i in items if i["pid"] == pid]
    return dict(item)


def _served_by(server: StratusServer, name: str, pid: int, payload: dict[str, Any]) -> bool:
    response = server.invoke(name, payload)
    return response.status_code == 200 and response.json()["pid"] == pid


def test_a_replica_that_fails_is_ejected_probed_and_readmitted(server: StratusServer) -> None:
    name = "outlier-errors"
    server.deploy("outliers", "app.py:Flaky", name=name, min_replicas=2, max_replicas=2,
                  outliers={"consecutive_failures": 3, "base_ejection_s": 1.0,
                            "interval_s": 600})
    view = server.wait_ready(name, 2)
    sick, healthy = (item["pid"] for item in view["replicas"]["items"])
    statuses = [server.invoke(name, {"fail_pid": sick}).status_code for _ in range(40)]
    # Every request the sick replica took failed, and the third in a row ejected it.
    assert statuses.count(500) == 3 and statuses.count(200) == 37, statuses
    assert statuses[-10:] == [200] * 10
    item = _item(server, name, sick)
    assert item["outlier"] in ("open", "half_open") and item["ejections"] == 1
    assert item["ejected_because"] == "3 failures in a row"
    assert _item(server, name, healthy)["outlier"] == "closed"
    resilience = server.status(name)["resilience"]["1"]
    assert resilience["ejected"] == 1 and resilience["ejections"] == 1
    metrics = server.http.get("/metrics").text
    assert (f'stratus_ejected_replicas{{deployment="{name}",namespace="default",revision="1"}}'
            " 1.0") in metrics

    # Its back-off (1 s) over, one request probes it; still sick, it is out for twice as long.
    wait_for(lambda: server.invoke(name, {"fail_pid": sick}).status_code == 500, 10,
             "the probe of the sick replica")
    item = _item(server, name, sick)
    assert item["outlier"] == "open" and item["ejections"] == 2
    assert item["ejected_because"] == "the probe request failed"
    assert 1.0 < item["ejected_for_s"] <= 2.0  # the doubled back-off, 2 s from the probe

    # Healthy again: the next probe readmits it, and it serves its share.
    wait_for(lambda: _served_by(server, name, sick, {}), 15, "the sick replica to serve again")
    assert _item(server, name, sick)["outlier"] == "closed"
    assert server.status(name)["resilience"]["1"]["ejected"] == 0
    server.delete(name)


def test_a_hung_replica_is_ejected_then_readmitted_after_sigcont(server: StratusServer) -> None:
    name = "outlier-hang"
    server.deploy("outliers", "app.py:Flaky", name=name, min_replicas=2, max_replicas=2,
                  max_concurrency=2, timeout_s=1.0,
                  outliers={"consecutive_failures": 2, "base_ejection_s": 2.0})
    view = server.wait_ready(name, 2)
    hung, healthy = (item["pid"] for item in view["replicas"]["items"])
    os.kill(hung, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(6) as pool:
            responses = list(pool.map(lambda _: server.invoke(name, {"sleep": 0.2}), range(6)))
        # The hung replica took one request per slot; each timed out, and the second ejected it.
        codes = sorted(r.status_code for r in responses)
        assert codes.count(504) == 2 and codes.count(200) == 4, codes
        item = _item(server, name, hung)
        assert item["outlier"] == "open" and item["ejected_because"] == "2 failures in a row"
        # While it is out, every request goes to its sibling.
        assert all(server.invoke(name, {}).json()["pid"] == healthy for _ in range(5))
    finally:
        # Within the test server's 4 s heartbeat timeout, so it is not killed for silence.
        os.kill(hung, signal.SIGCONT)
    wait_for(lambda: _served_by(server, name, hung, {}), 15, "the resumed replica to serve")
    item = _item(server, name, hung)
    assert item["outlier"] == "closed" and item["state"] == "ready"
    server.delete(name)


def test_outlier_settings_are_checked_and_can_turn_ejection_off(server: StratusServer) -> None:
    response = server.deploy_raw("outliers", "app.py:Flaky", name="outlier-bad",
                                 outliers={"consecutive_failures": 0})
    assert response.status_code == 422 or response.status_code == 400, response.text
    assert "consecutive_failures" in response.text
    server.deploy("outliers", "app.py:Flaky", name="outlier-off", min_replicas=2,
                  max_replicas=2, outliers={"enabled": False})
    view = server.wait_ready("outlier-off", 2)
    sick = view["replicas"]["items"][0]["pid"]
    statuses = [server.invoke("outlier-off", {"fail_pid": sick}).status_code for _ in range(30)]
    assert statuses.count(500) > 5, "without ejection the sick replica keeps its share"
    assert all(item["outlier"] == "closed" for item in server.status("outlier-off")["replicas"]
               ["items"])
    server.delete("outlier-off")




def test_a_revision_brought_back_keeps_its_deployments_policies(server: StratusServer) -> None:
    """A retired revision made live again by a traffic change has the outlier ejection and
    adaptive limit its deployment declares, as a newly deployed revision does."""
    name = "outlier-back"
    for version in (1, 2):
        server.deploy("basic", "app.py:Echo", name=name, min_replicas=1, max_replicas=1,
                      config={"v": version}, shedding={"adaptive": True},
                      rollout={"watch_s": 1})
        server.wait_ready(name)
    wait_for(lambda: set(server.status(name)["resilience"]) == {"2"}, 30,
             "revision 1 to be retired once revision 2 took the traffic")
    answer = server.http.put(f"/api/deployments/{name}/traffic", json={"traffic": {"1": 100}})
    assert answer.status_code == 200, answer.text
    resilience = server.status(name)["resilience"]
    assert resilience["1"]["shedding"] is not None, resilience
    assert resilience["1"]["shedding"]["limit"] >= 1
