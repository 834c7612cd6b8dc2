"""Adaptive load shedding with a real server: a burst at a cold deployment and a short
overload are served or refused at once with Retry-After, and what is admitted stays fast;
the same overload without shedding queues until requests wait for seconds."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from overload import drive, summarise
from server import StratusServer

SHEDDING = {"adaptive": True}


def test_a_thousand_requests_at_a_cold_deployment_get_answers_or_refusals(
        server: StratusServer) -> None:
    name = "shed-cold"
    server.deploy("basic", "app.py:Echo", name=name, min_replicas=0, max_replicas=2,
                  max_concurrency=8, timeout_s=10, queue_timeout_s=10, shedding=SHEDDING)
    # All sent at once (a rate no client reaches); each may take the deployment's timeout and
    # its queue timeout at most, so 30 s covers any request that does not hang.
    answers = asyncio.run(drive(server.url, server.key, name, rate=1e6, duration_s=1000 / 1e6,
                                payload={"sleep": 0.05}, timeout_s=30))
    codes = Counter(a.status for a in answers)
    assert len(answers) == 1000 and set(codes) <= {200, 429, 503}, codes
    assert codes[200] >= 14, codes  # at least what the initial limit admits: 0.9 x 2 x 8
    refusals = [a for a in answers if a.status != 200]
    assert refusals and all(a.retry_after is not None and int(a.retry_after) >= 1
                            for a in refusals)
    view = server.status(name)
    assert view["resilience"]["1"]["shedding"]["shed"]["normal"] == codes[429]
    metrics = server.http.get("/metrics").text
    assert f'stratus_shed_requests_total{{deployment="{name}",namespace="default",' \
           f'priority="normal",revision="1"}} {float(codes[429])}' in metrics
    server.delete(name)


def test_a_critical_request_is_admitted_when_normal_ones_are_shed(server: StratusServer) -> None:
    name = "shed-priority"
    server.deploy("basic", "app.py:Echo", name=name, min_replicas=1, max_replicas=1,
                  max_concurrency=4, shedding={"adaptive": True, "initial_limit": 10})
    server.wait_ready(name)
    bad = server.invoke(name, {}, headers={"x-stratus-priority": "urgent"})
    assert bad.status_code == 400 and "x-stratus-priority" in bad.text

    with ThreadPoolExecutor(12) as pool:
        normal = [pool.submit(server.invoke, name, {"sleep": 1.0}) for _ in range(12)]
        time.sleep(0.3)  # the normal requests hold their 9 admissions (0.9 x 10)
        critical = server.invoke(name, {}, headers={"x-stratus-priority": "critical"}).status_code
        statuses = [future.result().status_code for future in normal]
    assert Counter(statuses) == {200: 9, 429: 3}, statuses
    assert critical == 200
    server.delete(name)


@pytest.mark.solo
def test_a_short_overload_is_shed_and_without_shedding_it_queues(server: StratusServer) -> None:
    """Two replicas of two 100 ms slots serve 40 requests a second; 120 a second come for 6 s.
    With shedding, goodput stays near capacity and admitted requests wait about half a service
    time (the tolerance, 1.5), so their median stays within 2x the unloaded one; without, the
    queue grows by 80 a second and requests wait for seconds. The issue's p99 bound is checked
    by the 30 s run (tests/chaos/test_overload.py): over 6 s on two shared cores, with the
    client on them too, a p99 is a handful of requests and mostly the machine's noise."""
    common = {"min_replicas": 2, "max_replicas": 2, "max_concurrency": 2, "timeout_s": 30}
    server.deploy("basic", "app.py:Echo", name="shed-on", shedding=SHEDDING, **common)
    server.deploy("basic", "app.py:Echo", name="shed-off", **common)
    server.wait_ready("shed-on", 2)
    server.wait_ready("shed-off", 2)
    payload = {"sleep": 0.1}
    unloaded = summarise(asyncio.run(drive(server.url, server.key, "shed-on", 10, 3, payload)), 3)
    assert unloaded.ok == unloaded.sent and unloaded.p50_ok_s is not None
    on = summarise(asyncio.run(drive(server.url, server.key, "shed-on", 120, 6, payload)), 6)
    off = summarise(asyncio.run(drive(server.url, server.key, "shed-off", 120, 6, payload)), 6)
    print(f"unloaded {unloaded}\nshedding {on}\nqueueing {off}")
    assert on.other == 0 and on.refused > 0 and off.refused == 0
    assert on.goodput >= 0.8 * 40, on  # the first windows are spent learning the limit
    assert on.p50_ok_s is not None and on.p50_ok_s <= 2 * unloaded.p50_ok_s, (on, unloaded)
    # Refused at once: never after the wait a queued request has (seconds, below).
    assert on.max_refusal_s is not None and on.max_refusal_s < 1.0, on
    assert off.p50_ok_s is not None and off.p50_ok_s > 2.0, off
    assert on.p99_ok_s is not None and off.p99_ok_s is not None
    assert on.p99_ok_s < off.p99_ok_s / 5, (on, off)
    server.delete("shed-on")
    server.delete("shed-off")
