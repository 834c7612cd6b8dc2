"""The simulator and the live controller run the same policy objects: replayed on the same
short trace, they make the same decisions, within one tick."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from server import StratusServer
from stratus.sim.simulator import Invocation, SimSettings, simulate, spec_policy_factory
from stratus.spec import ScalingSpec

TICK_S = 0.2  # the test server's tick
# (arrival s, duration s): overlaps reach three at once, idle gaps outlast the keep-alive.
TRACE = [(0.0, 1.5), (0.5, 1.5), (1.0, 1.5), (6.0, 0.5), (12.0, 1.0), (12.6, 1.0)]
END_S = 19.0

POLICIES: list[dict[str, Any]] = [
    {"policy": "fixed_keepalive", "policy_config": {"keepalive_s": 3}},
    {"policy": "kpa", "policy_config": {"stable_window_s": 2}, "scale_to_zero_after_s": 3},
]


def steps(decisions: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """Where the desired count changes, (time, new value), starting from zero replicas."""
    changes: list[tuple[float, int]] = []
    current = 0
    for t, desired in decisions:
        if desired != current:
            changes.append((t, desired))
            current = desired
    return changes


def replay(server: StratusServer, name: str) -> float:
    """Send the trace in real time; returns the wall-clock start."""
    start = time.time() + 0.5
    client = httpx.Client(base_url=server.url, timeout=30,
                          headers={"authorization": f"Bearer {server.key}"})

    def send(at: float, duration: float) -> None:
        time.sleep(max(0.0, start + at - time.time()))
        response = client.post(f"/api/deployments/{name}/invoke", json={"sleep": duration})
        assert response.status_code == 200, response.text

    threads = [threading.Thread(target=send, args=item) for item in TRACE]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    time.sleep(max(0.0, start + END_S - time.time()))
    client.close()
    return start


@pytest.mark.parametrize("scaling", POLICIES, ids=[p["policy"] for p in POLICIES])
def test_simulator_and_live_controller_agree(server: StratusServer,
                                             scaling: dict[str, Any]) -> None:
    name = f"agree-{scaling['policy'].replace('_', '-')}"
    fields = {"max_concurrency": 1, "target_utilization": 1.0, "min_replicas": 0,
              "max_replicas": 8, **scaling}
    server.deploy("basic", "app.py:Echo", name=name, **fields)
    start = replay(server, name)
    history = server.http.get(f"/api/deployments/{name}/autoscaler").json()["decisions"]
    live = steps([(d["t"] - start, d["desired"]) for d in history if start - 0.1 <= d["t"]])

    spec = ScalingSpec(**{k: v for k, v in fields.items() if k != "max_concurrency"})
    report = simulate([Invocation(at, name, duration * 1000) for at, duration in TRACE],
                      spec_policy_factory(spec, 1),
                      SimSettings(tick_s=TICK_S, cold_start_ms=40, record_decisions=True,
                                  start_s=0.0, end_s=END_S))
    simulated = steps([(d.t, d.desired) for d in report.runs[name].decisions])

    # The same sequence of replica counts ...
    assert [value for _, value in live] == [value for _, value in simulated], (live, simulated)
    # ... each change within one tick of the other. Both act at the first tick after the
    # event (a request's end, a keep-alive's expiry), but the live ticks fall at any phase of
    # the simulator's: the two differ by less than a tick, plus what the live path adds (its
    # requests' round trips, a tick a loaded loop runs late), allowed 0.1 s here.
    for (live_t, value), (sim_t, _) in zip(live, simulated, strict=True):
        assert abs(live_t - sim_t) <= TICK_S + 0.1, (value, live_t, sim_t)
