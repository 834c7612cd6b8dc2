"""The issue's overload: 3x a deployment's capacity for 30 s, with adaptive shedding and
without it in the same run. Long: runs with STRATUS_CHAOS_LONG=1 (`make test-chaos`)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from overload import drive, summarise
from server import StratusServer

pytestmark = pytest.mark.skipif(os.environ.get("STRATUS_CHAOS_LONG") != "1",
                                reason="30 s of overload twice: `make test-chaos`")

RATE, SECONDS = 120, 30  # 3x the 40 a second that two replicas of two 100 ms slots serve


def test_three_times_capacity_for_thirty_seconds(tmp_path: Path) -> None:
    server = StratusServer(tmp_path / "stratus")
    server.start()
    try:
        common = {"min_replicas": 2, "max_replicas": 2, "max_concurrency": 2, "timeout_s": 30}
        server.deploy("basic", "app.py:Echo", name="shed-on", shedding={"adaptive": True},
                      **common)
        server.deploy("basic", "app.py:Echo", name="shed-off", **common)
        server.wait_ready("shed-on", 2)
        server.wait_ready("shed-off", 2)
        payload = {"sleep": 0.1}
        unloaded = summarise(asyncio.run(drive(server.url, server.key, "shed-on", 10, 10,
                                               payload)), 10)
        capacity = summarise(asyncio.run(drive(server.url, server.key, "shed-off", 40, 10,
                                               payload)), 10)
        on = summarise(asyncio.run(drive(server.url, server.key, "shed-on", RATE, SECONDS,
                                         payload, timeout_s=60)), SECONDS)
        off = summarise(asyncio.run(drive(server.url, server.key, "shed-off", RATE, SECONDS,
                                          payload, timeout_s=60)), SECONDS)
        print(f"\nunloaded {unloaded}\ncapacity {capacity}\nshedding {on}\nqueueing {off}")
        assert unloaded.p99_ok_s is not None and on.p99_ok_s is not None
        assert on.goodput >= 0.9 * capacity.goodput, (on, capacity)
        assert on.p99_ok_s <= 2 * unloaded.p99_ok_s, (on, unloaded)
        assert on.other == 0 and on.max_refusal_s is not None and on.max_refusal_s < 1.0
    finally:
        server.stop()
