"""The issue's acceptance run for a server upgrade (`make test-chaos`): `stratus serve
--takeover` while the server serves 200 requests a second on keep-alive connections, against
a deployment of 3 replicas. No request fails, none pays a cold start, every replica keeps its
pid. The run prints its figures (docs/reliability.md); the short version is in
tests/integration/test_takeover.py."""

from __future__ import annotations

import os

import pytest

from server import StratusServer, descendants
from takeover import run_with_takeover

LONG = os.environ.get("STRATUS_CHAOS_LONG") == "1"
RATE, DURATION, AT = 200.0, 20.0, 5.0
pytestmark = pytest.mark.skipif(not LONG, reason="20 s of load across an upgrade: "
                                                 "`make test-chaos`")


def test_an_upgrade_at_200_requests_a_second_fails_nothing(fresh_server: StratusServer) -> None:
    server = fresh_server
    server.deploy("basic", "app.py:Echo", name="chaos-upgrade", min_replicas=3,
                  max_replicas=3, max_concurrency=8)
    server.wait_ready("chaos-upgrade", 3)
    assert server.process is not None
    replicas = {item["pid"] for item in server.status("chaos-upgrade")["replicas"]["items"]}
    family = descendants(server.process.pid)
    run = run_with_takeover(server, "chaos-upgrade", rate=RATE, duration=DURATION, at=AT)
    print(f"\nchaos-upgrade: {run.summary()}; report {run.report}")
    assert run.sent_in < DURATION * 1.1, run.summary()  # open loop: no bursts
    assert run.takeover.returncode == 0, run.summary()
    assert not run.failed, run.summary()
    assert not run.cold, run.summary()
    assert {item["pid"] for item in server.status("chaos-upgrade")["replicas"]["items"]} \
        == replicas
    assert family <= descendants(server.process.pid)
