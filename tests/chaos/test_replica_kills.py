"""The issue's acceptance run for retries of lost work (`make test-chaos`): kill -9 a random
replica every 2 s under 200 requests a second for 60 s, against a deployment of 3 replicas.
Declared idempotent, with retries on, no request fails; not declared, the only failures are
requests a killed handler had taken. Each run prints its figures (docs/reliability.md)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from replica_kills import Run, marker_dir, run_with_kills
from server import StratusServer

LONG = os.environ.get("STRATUS_CHAOS_LONG") == "1"
RATE, DURATION, EVERY = 200.0, 60.0, 2.0
pytestmark = pytest.mark.skipif(not LONG, reason="two minutes of kills: `make test-chaos`")


def _run(server: StratusServer, tmp_path: Path, name: str, idempotent: bool) -> Run:
    markers = marker_dir(tmp_path / "markers")
    server.deploy("retries", "app.py:Marked", name=name, min_replicas=3, max_replicas=3,
                  max_concurrency=8, config={"markers": str(markers)},
                  retries={"attempts": 2, "on": ["replica_lost", "connect", "timeout"],
                           "idempotent": idempotent})
    server.wait_ready(name, 3)
    run = run_with_kills(server, name, markers, rate=RATE, duration=DURATION, every=EVERY,
                         sleep=0.05)
    print(f"\n{name}: {run.summary()}")
    # Open loop: a client that fell behind would send in bursts, and test another scenario.
    assert run.sent_in < DURATION * 1.1, run.summary()
    return run


def test_an_idempotent_deployment_fails_nothing_under_a_kill_every_two_seconds(
        server: StratusServer, tmp_path: Path) -> None:
    run = _run(server, tmp_path, "chaos-idempotent", idempotent=True)
    assert len(run.killed) >= DURATION / EVERY - 2, run.summary()
    assert not run.failed, (run.summary(), run.failed[:10])
    assert run.retried, run.summary()


def test_without_idempotence_only_requests_in_a_killed_handler_fail(
        server: StratusServer, tmp_path: Path) -> None:
    run = _run(server, tmp_path, "chaos-plain", idempotent=False)
    assert len(run.killed) >= DURATION / EVERY - 2, run.summary()
    failed = {fate.id for fate in run.failed}
    reached = run.reached_killed()
    assert reached <= failed, (run.summary(), sorted(reached - failed))
    # The ack leaves just before the handler's thread writes its marker: a kill in between
    # fails a request without a marker (see tests/integration/test_retries.py).
    assert len(failed - reached) <= len(run.killed), (run.summary(), sorted(failed - reached))
    for fate in run.failed:
        assert fate.status == 502 and fate.error is not None, fate
        assert fate.error["type"] == "replica_failed", fate
