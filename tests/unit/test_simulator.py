"""Unit tests for the offline autoscaling simulator and ``stratus simulate``: small traces with
answers computed by hand, run through the real policies."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from stratus.autoscale.policy import Decision, ReplicaCounts
from stratus.cli.main import app
from stratus.cost import DEFAULT_PRICES
from stratus.dispatch.load import MetricSample
from stratus.resilience.concurrency_limit import LimitSettings
from stratus.sim.report import DeploymentRun
from stratus.sim.simulator import (
    Invocation,
    PolicyFactory,
    SimSettings,
    simulate,
    spec_policy_factory,
)
from stratus.sim.tracegen import generate_trace
from stratus.spec import ScalingSpec


def factory(policy: str, max_concurrency: int = 1, max_replicas: int = 100,
            **config: Any) -> PolicyFactory:
    spec = ScalingSpec(policy=policy, policy_config=config, target_utilization=1.0,
                       max_replicas=max_replicas)
    return spec_policy_factory(spec, max_concurrency)


def run_one(invocations: list[Invocation], policy: PolicyFactory, **settings: Any) -> DeploymentRun:
    report = simulate(invocations, policy, SimSettings(record_decisions=True, **settings))
    (run,) = report.runs.values()
    return run


def at(run: DeploymentRun, t: float, source: str = "tick") -> tuple[int, str, int, int]:
    (record,) = [d for d in run.decisions if d.t == t and d.source == source]
    return record.desired, record.mode, record.ready, record.starting


class ScriptedPolicy:
    """A custom policy, as a benchmark would pass one: wants ``script(now)`` replicas."""

    name = "scripted"

    def __init__(self, script: Callable[[float], int]) -> None:
        self.script = script
        self.samples: list[MetricSample] = []

    def observe(self, sample: MetricSample) -> None:
        self.samples.append(sample)

    def decide(self, now: float, counts: ReplicaCounts) -> Decision:
        return Decision(self.script(now), "scripted")


# -- hand-computed traces ------------------------------------------------------------------
def test_fixed_keepalive_by_hand() -> None:
    # Keep-alive 60 s, 100 ms requests, 500 ms cold starts. The first replica starts at 0,
    # serves 0.5-0.6 and 30-30.1; the keep-alive runs from the end of the last request
    # (30.1), so the tick at 91 (30.1 < 91 - 60) drains it. The request at 200 starts a
    # second replica that serves 200.5-200.6 and is drained at 261.
    trace = [Invocation(0.0, "a", 100.0), Invocation(30.0, "a", 100.0), Invocation(200.0, "a", 100.0)]
    run = run_one(trace, factory("fixed_keepalive", keepalive_s=60), end_s=300.0)
    assert run.cold_starts == 2
    assert run.latencies_ms == pytest.approx([600.0, 100.0, 600.0])
    assert run.busy_replica_seconds == pytest.approx(0.3)
    assert run.idle_replica_seconds == pytest.approx(91.0 + 61.0 - 0.3)
    assert run.replicas_started == 2
    assert at(run, 0.0, "activator") == (1, "active", 0, 0)
    assert at(run, 90.0) == (1, "keepalive", 1, 0)
    assert at(run, 91.0) == (0, "idle", 1, 0)
    assert at(run, 92.0) == (0, "idle", 0, 0)
    assert at(run, 200.0, "activator") == (1, "active", 0, 0)
    assert at(run, 261.0) == (0, "idle", 1, 0)

    report = simulate(trace, factory("fixed_keepalive", keepalive_s=60), SimSettings(end_s=300.0))
    total = report.total
    assert (total.invocations, total.cold_starts) == (3, 2)
    assert total.cold_start_fraction == pytest.approx(2 / 3)
    assert total.p50_latency_ms == pytest.approx(600.0)
    assert total.replica_seconds == pytest.approx(152.0)
    prices = DEFAULT_PRICES
    expected = 3 * prices.per_request + 0.3 * prices.per_gb_second + 151.7 * prices.per_replica_second
    assert total.cost == pytest.approx(expected)
    assert report.to_dict()["deployments"]["a"]["cold_starts"] == 2


def test_cold_start_latency_is_cold_start_plus_duration() -> None:
    run = run_one([Invocation(5.0, "a", 40.0)], factory("kpa"), cold_start_ms=250.0)
    assert run.latencies_ms == pytest.approx([290.0])
    assert run.cold_starts == 1


def test_requests_beyond_capacity_queue() -> None:
    burst = [Invocation(0.0, "a", 1000.0) for _ in range(3)]
    # One replica with one slot: the three run one after another once it is up at 0.5 s.
    # Each waited for a replica that became ready after it arrived: all three are cold.
    run = run_one(burst, factory("fixed_keepalive", max_replicas=1, keepalive_s=5))
    assert run.latencies_ms == pytest.approx([1500.0, 2500.0, 3500.0])
    assert run.cold_starts == 3
    assert run.busy_replica_seconds == pytest.approx(3.0)
    # Two slots: two run at once, the third after them; the replica is busy 0.5-2.5.
    run = run_one(burst, factory("fixed_keepalive", max_concurrency=2, max_replicas=1, keepalive_s=5),
                  max_concurrency=2)
    assert run.latencies_ms == pytest.approx([1500.0, 1500.0, 2500.0])
    assert run.busy_replica_seconds == pytest.approx(2.0)


def test_queue_limits_shed_and_time_out() -> None:
    trace = [Invocation(0.0, "a", 5000.0), Invocation(0.1, "a", 10.0), Invocation(0.2, "a", 10.0)]
    run = run_one(trace, factory("fixed_keepalive", max_replicas=1, keepalive_s=5),
                  max_queued=2, queue_timeout_s=1.0)
    # 0.2 finds two waiting (shed); 0.1 is still waiting at 1.1 (timed out); 0 runs 0.5-5.5.
    assert (run.invocations, run.served, run.shed, run.timed_out) == (3, 1, 1, 1)
    assert run.latencies_ms == pytest.approx([5500.0])


def test_custom_policy_sees_the_live_samples_and_busy_replicas_drain() -> None:
    policies: list[ScriptedPolicy] = []

    def make() -> ScriptedPolicy:
        policies.append(ScriptedPolicy(lambda now: 2 if now < 10 else 0))
        return policies[-1]

    trace = [Invocation(0.0, "a", 20_000.0), Invocation(0.0, "a", 1000.0)]
    run = run_one(trace, make, end_s=30.0)
    # Both arrivals at 0 wait, and one activator pass sees them both (debounced).
    instant = policies[0].samples[0]
    assert (instant.t, instant.interval_s, instant.peak_concurrency, instant.queued) == (0.0, 0.0, 2, 2)
    ticks = [s for s in policies[0].samples if s.interval_s > 0]
    assert [s.t for s in ticks] == [float(t) for t in range(1, 31)]
    assert ticks[0].average_concurrency == pytest.approx(2.0)
    assert ticks[1].average_concurrency == pytest.approx(1.5)
    # At 10 the idle replica goes at once; the busy one drains and goes at 20.5.
    assert at(run, 11.0) == (0, "stable", 0, 0)
    assert run.busy_replica_seconds == pytest.approx(21.0)
    assert run.idle_replica_seconds == pytest.approx(0.5 + 0.5 + 8.5)
    assert run.latencies_ms == pytest.approx([20_500.0, 1500.0])


def test_scale_down_cancels_a_starting_replica_before_draining_a_ready_one() -> None:
    # As the live reconciler: with one ready and one starting but one wanted (and nobody
    # waiting), the starting replica is cancelled and the warm one stays.
    script = {0.0: 1, 5.0: 2, 6.0: 1}

    def make() -> ScriptedPolicy:
        return ScriptedPolicy(lambda now: script.get(now, 1) if now <= 6 else 1)

    run = run_one([Invocation(0.0, "a", 10.0)], make, cold_start_ms=3000.0, end_s=12.0)
    assert at(run, 6.0) == (1, "stable", 1, 1)
    assert at(run, 7.0) == (1, "stable", 1, 0)
    assert at(run, 9.0) == (1, "stable", 1, 0)
    assert run.replicas_started == 2


def test_kpa_scales_out_on_a_burst() -> None:
    burst = [Invocation(100.0 + i / 30, "a", 10_000.0) for i in range(30)]
    run = run_one([Invocation(0.0, "a", 10.0), *burst], factory("kpa"), end_s=200.0)
    assert run.peak_replicas == 30  # one per request, target 1 per replica
    assert any(d.mode == "panic" for d in run.decisions)
    # The first request ended at 0.51 s: zero at the first tick 60 s after that, 61.
    assert at(run, 60.0)[0] == 1
    assert at(run, 61.0) == (0, "stable", 1, 0)
    assert at(run, 62.0) == (0, "stable", 0, 0)
    assert max(run.latencies_ms) < 10_000.0 + 600.0  # nobody waited behind another request


def test_hybrid_histogram_learns_a_periodic_pattern() -> None:
    every_5_min = [Invocation(300.0 * i, "a", 100.0) for i in range(20)]
    config = {"bin_s": 60, "range_s": 600, "fallback_keepalive_s": 60,
              "min_samples": 5}
    run = run_one(every_5_min, factory("hybrid_histogram", **config))
    # Idle times of ~299.5 s all fall in bin 4: pre-warm at 4*60*0.9 = 216 s. The histogram
    # holds 5 idle times after the 6th request; from the 7th on, a replica is warm.
    assert run.cold_starts == 6
    assert {"fallback", "unloaded", "prewarmed"} <= {d.mode for d in run.decisions}
    keepalive = run_one(every_5_min, factory("fixed_keepalive", keepalive_s=60))
    assert keepalive.cold_starts == 20


def test_ticks_run_through_idle_time_for_every_deployment() -> None:
    trace = [Invocation(10.0, "a", 1.0), Invocation(100.0, "b", 1.0)]
    report = simulate(trace, factory("kpa"), SimSettings(record_decisions=True, tick_s=2.0))
    for run in report.runs.values():
        ticks = [d.t for d in run.decisions if d.source == "tick"]
        assert ticks == [float(t) for t in range(12, 101, 2)]


def test_totals_add_up_over_deployments() -> None:
    trace = [Invocation(float(t), name, 50.0 if name == "a" else 200.0)
             for t in range(0, 100, 7) for name in ("a", "b")]
    report = simulate(trace, factory("fixed_keepalive", keepalive_s=20))
    a, b = report.deployments["a"], report.deployments["b"]
    total = report.total
    assert total.invocations == a.invocations + b.invocations == len(trace)
    assert total.busy_replica_seconds == pytest.approx(a.busy_replica_seconds + b.busy_replica_seconds)
    assert total.idle_replica_seconds == pytest.approx(a.idle_replica_seconds + b.idle_replica_seconds)
    assert total.cost == pytest.approx(a.cost + b.cost)
    assert a.p50_latency_ms is not None and b.p50_latency_ms is not None
    assert a.p50_latency_ms <= (total.p50_latency_ms or 0) <= b.p50_latency_ms
    assert a.busy_replica_seconds == pytest.approx(0.05 * a.invocations)


@pytest.mark.parametrize("policy", ["kpa", "fixed_keepalive", "hybrid_histogram"])
def test_invariants_on_a_generated_trace(policy: str) -> None:
    trace = generate_trace(deployments=5, hours=1.0, seed=9)
    report = simulate(trace, factory(policy), SimSettings(cold_start_ms=200.0))
    total = report.total
    assert total.invocations == len(trace) == total.served + total.shed + total.timed_out
    # One slot per replica: a replica is busy exactly while one request runs.
    assert total.busy_replica_seconds == pytest.approx(sum(inv.duration_ms for inv in trace) / 1000)
    for name, run in report.runs.items():
        durations = sorted(inv.duration_ms for inv in trace if inv.deployment == name)
        assert min(run.latencies_ms) >= durations[0] - 1e-6
        assert sum(run.latencies_ms) >= sum(durations) - 1e-6
        assert run.cold_starts <= run.replicas_started
    assert simulate(trace, factory(policy), SimSettings(cold_start_ms=200.0)).to_dict() == report.to_dict()


def test_unsorted_input_gives_the_sorted_result() -> None:
    trace = [Invocation(float(t), "a", 30.0) for t in (0, 3, 40, 41, 90)]
    policy = factory("kpa")
    assert simulate(trace[::-1], policy).to_dict() == simulate(trace, policy).to_dict()


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="tick_s"):
        SimSettings(tick_s=0)
    with pytest.raises(ValueError, match="max_concurrency"):
        SimSettings(max_concurrency=0)


# -- the command -----------------------------------------------------------------------------
def test_cli_generates_and_simulates(tmp_path: Path) -> None:
    runner = CliRunner()
    trace = tmp_path / "trace.csv"
    result = runner.invoke(app, ["simulate", "--generate", str(trace), "--deployments", "6",
                                 "--hours", "1", "--seed", "4"])
    assert result.exit_code == 0, result.output
    assert trace.read_text().startswith("timestamp_s,deployment,duration_ms\n")
    config = '{"keepalive_s": 120, "max_replicas": 50, "max_concurrency": 2}'
    result = runner.invoke(app, ["simulate", "--trace", str(trace), "--policy", "fixed_keepalive",
                                 "--policy-config", config, "--cold-start-ms", "300", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    for key in ("invocations", "cold_starts", "cold_start_fraction", "p50_latency_ms",
                "p99_latency_ms", "busy_replica_seconds", "idle_replica_seconds", "cost"):
        assert key in data
        for per_deployment in data["deployments"].values():
            assert key in per_deployment
    rows = [line.split(",") for line in trace.read_text().splitlines()[1:]]
    assert set(data["deployments"]) == {row[1] for row in rows}
    assert data["invocations"] == len(rows)
    assert data["policy"] == "fixed_keepalive"
    assert data["policy_config"] == {"keepalive_s": 120}
    assert data["config"]["max_replicas"] == 50 and data["config"]["max_concurrency"] == 2
    assert data["config"]["target_utilization"] == 1.0
    table = runner.invoke(app, ["simulate", "--trace", str(trace), "--policy", "kpa"])
    assert table.exit_code == 0 and "TOTAL" in table.stdout


def test_cli_as_a_process(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("timestamp_s,deployment,duration_ms\n0,a,100\n30,a,100\n200,a,100\n")
    stratus = Path(sys.executable).parent / "stratus"
    done = subprocess.run([str(stratus), "simulate", "--trace", str(trace), "--policy",
                           "fixed_keepalive", "--policy-config", '{"keepalive_s": 60}', "--json"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["cold_starts"] == 2
    assert data["p99_latency_ms"] == pytest.approx(600.0)


@pytest.mark.parametrize(("args", "message"), [
    (["--policy", "kpa", "--policy-config", "{not json"], "not valid JSON"),
    (["--policy", "kpa", "--policy-config", "[1]"], "must be a JSON object"),
    (["--policy", "kpa", "--policy-config", '{"keepalive_s": 5}'], "keepalive_s"),
    (["--policy", "fixed_keepalive", "--policy-config", '{"keepalive_s": -1}'], "keepalive_s"),
    (["--policy", "kpa", "--policy-config", '{"min_replicas": -1}'], "min_replicas"),
    (["--policy", "kpa", "--policy-config", '{"max_concurrency": 0}'], "max_concurrency"),
    (["--policy", "kpa", "--policy-config", '{"schedules": ["nonsense"]}'], "schedules"),
    (["--policy", "nope"], "unknown policy"),
    ([], "needs --policy"),
])
def test_cli_refuses_bad_policy_config(tmp_path: Path, args: list[str], message: str) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("timestamp_s,deployment,duration_ms\n0,a,100\n")
    result = CliRunner().invoke(app, ["simulate", "--trace", str(trace), *args])
    assert result.exit_code == 1
    assert message in result.stderr


@pytest.mark.parametrize(("text", "message"), [
    ("time,name,ms\n1,a,2\n", "line 1: expected the header"),
    ("timestamp_s,deployment,duration_ms\n1,a,2\n\n2,b,x\n", "line 4: duration_ms 'x' is not a number"),
    ("timestamp_s,deployment,duration_ms\n1,a\n", "line 2: expected 3 fields"),
    ("timestamp_s,deployment,duration_ms\n", "no invocations"),
])
def test_cli_refuses_a_bad_trace(tmp_path: Path, text: str, message: str) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text(text)
    result = CliRunner().invoke(app, ["simulate", "--trace", str(trace), "--policy", "kpa"])
    assert result.exit_code == 1
    assert message in result.stderr


def test_cli_needs_exactly_one_mode(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["simulate", "--policy", "kpa"])
    assert result.exit_code == 1 and "--trace" in result.stderr
    missing = CliRunner().invoke(app, ["simulate", "--trace", str(tmp_path / "none.csv"), "--policy", "kpa"])
    assert missing.exit_code == 1 and "cannot read" in missing.stderr


def test_the_adaptive_limit_sheds_an_overload_instead_of_queueing_it() -> None:
    """Two replicas of four 100 ms slots serve 80 requests a second; 240 a second arrive for
    20 s. Queued, the backlog grows until requests wait for seconds; with the live pool's
    gradient limit in front of the queue, the surplus is refused at once and what is admitted
    waits at most about the tolerance's half a service time."""
    trace = [Invocation(1.0 + i / 240, "a", 100.0) for i in range(240 * 20)]
    two = ScriptedPolicy(lambda now: 2)
    settings: dict[str, Any] = {"max_concurrency": 4, "queue_timeout_s": 60.0}
    queued = run_one(trace, lambda: two, **settings)
    limit = LimitSettings(initial_limit=8, min_limit=4, max_limit=1008, window_s=0.25)
    shedding = run_one(trace, lambda: ScriptedPolicy(lambda now: 2), concurrency_limit=limit,
                       **settings)
    capacity = 80 * 20
    assert max(queued.latencies_ms) > 5000  # then the queue fills, and more are shed
    assert shedding.served >= 0.9 * capacity
    assert shedding.shed == shedding.invocations - shedding.served
    ordered = sorted(shedding.latencies_ms)
    p99 = ordered[int(0.99 * len(ordered)) - 1]
    assert p99 <= 2 * 100.0, p99
