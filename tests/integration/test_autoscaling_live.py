"""Autoscaling policies driving a real server and real replicas (the test server ticks every
0.2 s)."""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from server import StratusServer, wait_for

TICK_S = 0.2


def decisions(server: StratusServer, name: str) -> list[dict[str, Any]]:
    response = server.http.get(f"/api/deployments/{name}/autoscaler")
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["decisions"]
    return found


def fire(server: StratusServer, name: str, count: int, sleep: float,
         fired: list[float] | None = None) -> list[httpx.Response]:
    """``count`` concurrent invocations. With ``fired``: their connections are opened first,
    so that the burst reaches the server at once, and the time it was sent is appended."""
    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60,
                                     headers={"authorization": f"Bearer {server.key}"}) as client:
            if fired is not None:
                await asyncio.gather(*(client.get("/healthz") for _ in range(count)))
                fired.append(time.time())
            calls = [client.post(f"/api/deployments/{name}/invoke", json={"sleep": sleep})
                     for _ in range(count)]
            return await asyncio.gather(*calls)

    return asyncio.run(run())


def test_kpa_burst_from_zero_panics_scales_out_then_back_to_zero(server: StratusServer) -> None:
    target, stable, grace = 8, 3.0, 6.0
    server.deploy("basic", "app.py:Echo", name="as-burst", max_concurrency=target,
                  target_utilization=1.0, min_replicas=0, max_replicas=8,
                  scale_to_zero_after_s=grace, policy="kpa",
                  policy_config={"stable_window_s": stable})
    results: list[httpx.Response] = []
    fired: list[float] = []
    burst = threading.Thread(
        target=lambda: results.extend(fire(server, "as-burst", 64, 2.5, fired)))
    burst.start()
    # From when the burst was sent: a loaded machine once took 3 s to start the client and
    # open its 64 connections, which the ticks counted below are not about.
    wait_for(lambda: bool(fired), 30, "the burst's connections to open")
    started = fired[0]
    wanted = math.ceil(64 / target)
    view = server.wait_ready("as-burst", wanted, timeout=20)
    reached = time.time()
    burst.join(60)
    ended = time.time()
    assert [r.status_code for r in results] == [200] * 64
    history = decisions(server, "as-burst")
    during = [d for d in history if started <= d["t"] <= reached]
    full = next(d for d in during if d["desired"] >= wanted)
    # Panic acts on the first tick that sees the burst; the bound (16 ticks) leaves room for
    # a loaded machine that delays the requests' arrival and the ticks. Decisions are also
    # made between ticks (a request arriving at zero replicas asks for one), so the bound is
    # on their time, not on how many there were.
    took = full["t"] - started
    assert took <= 16 * TICK_S, f"desired reached {wanted} only {took:.2f} s after the burst"
    assert any(d["mode"] == "panic" for d in during), "a burst from zero is a panic"
    assert view["autoscaler"]["policy"] == "kpa"

    # No scale-down while the panic lasts (at least a stable window), then down to one
    # replica, then to zero once nothing has run for the grace period.
    wait_for(lambda: server.status("as-burst")["replicas"]["ready"] == 0, 30, "scale to zero")
    history = [d for d in decisions(server, "as-burst") if d["t"] >= started]
    panic = [d for d in history if d["mode"] == "panic"]
    assert all(b["desired"] >= a["desired"] for a, b in itertools.pairwise(panic))
    assert panic[-1]["t"] - panic[0]["t"] >= stable - 2 * TICK_S, "panic lasts a stable window"
    peak = max(d["desired"] for d in history)
    at_peak = next(i for i, d in enumerate(history) if d["desired"] == peak)
    first_down = next(d for d in history[at_peak:] if d["desired"] < peak)
    assert first_down["t"] > panic[-1]["t"], "no scale-down during the panic"
    after = [d for d in history if d["t"] >= first_down["t"]]
    assert any(d["desired"] == 1 for d in after), "one replica kept through the grace period"
    zero = next(d for d in after if d["desired"] == 0)
    assert zero["t"] - ended >= grace - 2 * TICK_S - 0.5
    assert "scale to zero" in zero["reason"]
    metrics = server.http.get("/metrics")
    assert metrics.status_code == 200
    assert 'stratus_autoscaler_desired_replicas{deployment="as-burst",namespace="default"} 0.0' \
        in metrics.text
    assert 'stratus_autoscaler_panic{deployment="as-burst",namespace="default"}' in metrics.text


def test_provisioned_concurrency_holds_its_floor(server: StratusServer) -> None:
    server.deploy("basic", "app.py:Echo", name="as-prov", min_replicas=0, provisioned_replicas=2,
                  scale_to_zero_after_s=0.5)
    view = server.wait_ready("as-prov", 2)
    time.sleep(2)
    view = server.status("as-prov")
    assert view["replicas"]["ready"] == 2
    assert "provisioned 2" in view["autoscaler"]["reason"]
    assert server.invoke("as-prov", {}).headers["x-stratus-cold-start"] == "false"


def test_a_scheduled_floor_applies_inside_its_window_and_lifts_outside(
        server: StratusServer) -> None:
    # Every minute, from :00 to :30, keep two replicas warm.
    server.deploy("basic", "app.py:Echo", name="as-sched", min_replicas=0,
                  scale_to_zero_after_s=0.5, schedules=["* * * * * for 30s keep 2"])

    def second() -> float:
        now = datetime.now(UTC)
        return now.second + now.microsecond / 1e6

    def replicas() -> int:
        counts = server.status("as-sched")["replicas"]
        return int(counts["ready"] + counts["starting"])

    seen_inside = seen_outside = False
    deadline = time.monotonic() + 75
    while not (seen_inside and seen_outside) and time.monotonic() < deadline:
        moment = second()
        if 3 <= moment < 27:  # well inside the window
            wait_for(lambda: server.status("as-sched")["replicas"]["ready"] == 2, 5, "the floor")
            assert "schedule" in server.status("as-sched")["autoscaler"]["reason"]
            seen_inside = True
        elif 33 <= moment < 57:  # well outside
            wait_for(lambda: replicas() == 0, 5, "the floor to lift")
            seen_outside = True
        time.sleep(0.5)
    assert seen_inside and seen_outside


def test_hybrid_histogram_unloads_then_prewarms_before_the_next_arrival(
        server: StratusServer) -> None:
    period = 4.0
    server.deploy("basic", "app.py:Echo", name="as-hybrid", min_replicas=0, policy="hybrid_histogram",
                  policy_config={"bin_s": 1, "range_s": 60, "min_samples": 3, "cv_threshold": 2,
                                 "fallback_keepalive_s": 600})
    responses = []
    for _ in range(9):
        started = time.monotonic()
        responses.append(server.invoke("as-hybrid", {}))
        time.sleep(max(0.0, period - (time.monotonic() - started)))
    assert all(r.status_code == 200 for r in responses)
    history = decisions(server, "as-hybrid")
    modes = [d["mode"] for d in history]
    assert "fallback" in modes, "a fresh histogram falls back to fixed keep-alive"
    assert "unloaded" in modes and "prewarmed" in modes
    unloaded = [d for d in history if d["mode"] == "unloaded"]
    assert all(d["desired"] == 0 for d in unloaded)
    # Once the histogram has learned the period, each arrival finds a pre-warmed replica
    # although the deployment had gone to zero replicas in between.
    learned_from = next(i for i, d in enumerate(history) if d["mode"] == "unloaded")
    learned_at = history[learned_from]["t"]
    late = [r for r, at in zip(responses, range(len(responses)), strict=True)
            if at >= 6]
    assert late and all(r.headers["x-stratus-cold-start"] == "false" for r in late), \
        [r.headers["x-stratus-cold-start"] for r in responses]
    assert any(d["ready"] == 0 for d in history if d["t"] > learned_at), \
        "the replica must really be unloaded between invocations"


@pytest.mark.parametrize(("fields", "message"), [
    ({"policy": "magic"}, "policy"),
    ({"policy": "kpa", "policy_config": {"stable_window": 10}}, "stable_window"),
    ({"policy": "kpa", "policy_config": {"metric": "rps"}}, "target_rps"),
    ({"schedules": ["every day keep 3"]}, "cron"),
    ({"schedules": ["61 * * * * for 1h keep 1"]}, "cron"),
])
def test_bad_autoscaling_config_is_refused(server: StratusServer, fields: dict[str, Any],
                                           message: str) -> None:
    response = server.deploy_raw("basic", "app.py:Echo", name="as-bad", **fields)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]["message"]
