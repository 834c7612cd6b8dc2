"""A deployment's autoscaler history: the last HISTORY decisions, compact while kept and shown
by the API as dicts."""

from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime

from stratus.autoscale.policy import Decision, ReplicaCounts
from stratus.control.unit import HISTORY, DeploymentUnit
from stratus.spec import ScalingSpec

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def _decide(unit: DeploymentUnit, tick: int) -> None:
    # Like the KPA's: every reason differs, since it quotes the load it saw.
    reason = (f"concurrency {tick % 97 / 10:.2f} over 60s at target 10 per replica; "
              "clamped to [1, 2]")
    unit.record(Decision(1 + tick % 2, reason, "stable"), 1000.0 + tick,
                ReplicaCounts(ready=1, starting=tick % 2))


def test_the_history_keeps_the_last_decisions_in_a_bounded_space() -> None:
    unit = DeploymentUnit("default", "echo", ScalingSpec(), NOW, NOW)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for tick in range(3 * HISTORY):
            _decide(unit, tick)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(unit.history) == HISTORY
    # As dicts, 410 bytes a decision: 240 KiB a deployment ten minutes after it started.
    assert held / HISTORY < 300, f"{held / HISTORY:.0f} bytes a decision"


def test_the_api_sees_each_decision_as_a_dict_oldest_first() -> None:
    unit = DeploymentUnit("default", "echo", ScalingSpec(), NOW, NOW)
    for tick in range(HISTORY + 5):
        _decide(unit, tick)
    decisions = unit.decisions()
    assert len(decisions) == HISTORY
    assert decisions[0] == {"t": 1005.0, "desired": 2, "mode": "stable", "ready": 1,
                            "starting": 1, "reason": decisions[0]["reason"]}
    assert decisions[0]["reason"].startswith("concurrency 0.50 over 60s")
    assert decisions[-1]["t"] == 1000.0 + HISTORY + 4
