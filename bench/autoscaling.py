"""Autoscaling policies on a generated 24-hour trace, through the simulator.

    .venv/bin/python bench/autoscaling.py [--deployments 50] [--hours 24] [--seed 0] [--json]

1. hybrid_histogram against fixed_keepalive (10 min), on every deployment, with replicas
   that take one request at a time (Lambda-like) and replicas that take 64 (one warm
   instance per application, the model of the "Serverless in the Wild" paper).
2. kpa against a Ray-Serve-default-like policy (30 s upscale delay, 600 s downscale delay)
   on the bursty deployments: p99 latency and replica-seconds.
3. A plot of replicas against concurrency over time for one bursty deployment, written to
   docs/img/autoscaling-replicas.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH_DIR, log, machine_info, markdown_table, timestamp, write_results
from ray_like_policy import RayServeLikePolicy
from stratus.autoscale.policy import Bounds, ScalingPolicy
from stratus.sim.report import DeploymentRun, SimReport
from stratus.sim.simulator import Invocation, SimSettings, simulate, spec_policy_factory
from stratus.sim.tracegen import generate_trace, write_trace
from stratus.spec import ScalingSpec

COLD_START_MS = 500.0
KEEPALIVE_S = 600.0
PLOT = BENCH_DIR.parent / "docs" / "img" / "autoscaling-replicas.png"
KEYS = ("invocations", "cold_starts", "cold_start_fraction", "p50_latency_ms", "p99_latency_ms",
        "busy_replica_seconds", "idle_replica_seconds", "replica_seconds", "cost")


def run(trace: Sequence[Invocation], factory: Callable[[], ScalingPolicy], capacity: int,
        record: bool = False) -> SimReport:
    settings = SimSettings(tick_s=1.0, cold_start_ms=COLD_START_MS, max_concurrency=capacity,
                           record_decisions=record)
    return simulate(trace, factory, settings)


def spec_factory(policy: str, capacity: int, target: float, **config: Any) -> Callable[[], ScalingPolicy]:
    scaling = ScalingSpec(policy=policy, policy_config=config, max_replicas=1000,
                          target_concurrency=target, target_utilization=1.0)
    return spec_policy_factory(scaling, capacity)


def summary(report: SimReport) -> dict[str, Any]:
    total = report.to_dict()
    return {key: total[key] for key in KEYS}


def hybrid_vs_fixed(trace: Sequence[Invocation]) -> list[dict[str, Any]]:
    rows = []
    for model, capacity in (("one request per replica", 1), ("one instance per app (64)", 64)):
        started = time.perf_counter()
        fixed = summary(run(trace, spec_factory("fixed_keepalive", capacity, capacity,
                                                keepalive_s=KEEPALIVE_S), capacity))
        hybrid = summary(run(trace, spec_factory("hybrid_histogram", capacity, capacity), capacity))
        log(f"{model}: simulated in {time.perf_counter() - started:.0f}s")
        rows.append({
            "model": model, "capacity": capacity, "fixed_keepalive": fixed,
            "hybrid_histogram": hybrid,
            "cold_start_ratio": hybrid["cold_starts"] / max(1, fixed["cold_starts"]),
            "idle_ratio": hybrid["idle_replica_seconds"] / fixed["idle_replica_seconds"],
        })
    return rows


def ray_like_factory(capacity: int, target: float) -> Callable[[], ScalingPolicy]:
    return lambda: RayServeLikePolicy(Bounds(0, 1000, target))


def kpa_vs_ray(trace: Sequence[Invocation]) -> dict[str, Any]:
    bursty = [item for item in trace if item.deployment.startswith("bursty")]
    capacity, target = 4, 2.0  # Ray Serve's default target_ongoing_requests is 2
    kpa = summary(run(bursty, spec_factory("kpa", capacity, target), capacity))
    ray = summary(run(bursty, ray_like_factory(capacity, target), capacity))
    return {"deployments": len({item.deployment for item in bursty}), "capacity": capacity,
            "target": target, "kpa": kpa, "ray_serve_like": ray,
            "p99_ratio": kpa["p99_latency_ms"] / ray["p99_latency_ms"],
            "replica_seconds_ratio": kpa["replica_seconds"] / ray["replica_seconds"]}


def plot(trace: Sequence[Invocation]) -> str:
    """Replicas against concurrency for the busiest bursty deployment, around its peak."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts: dict[str, int] = {}
    for item in trace:
        if item.deployment.startswith("bursty"):
            counts[item.deployment] = counts.get(item.deployment, 0) + 1
    name = max(counts, key=lambda key: counts[key])
    one = [item for item in trace if item.deployment == name]
    capacity, target = 4, 2.0
    runs: dict[str, DeploymentRun] = {
        "kpa": run(one, spec_factory("kpa", capacity, target), capacity, record=True).runs[name],
        "Ray-Serve-like": run(one, ray_like_factory(capacity, target), capacity,
                              record=True).runs[name],
    }
    busiest = max(runs["kpa"].decisions, key=lambda d: d.concurrency).t
    lo, hi = busiest - 900, busiest + 2700
    figure, axis = plt.subplots(figsize=(11, 4.5), dpi=120)
    ticks = [d for d in runs["kpa"].decisions if d.source == "tick" and lo <= d.t <= hi]
    axis.fill_between([(d.t - lo) / 60 for d in ticks], [d.concurrency for d in ticks], step="post",
                      alpha=0.3, color="grey", label="concurrency (requests in the system)")
    for label, color in (("kpa", "tab:blue"), ("Ray-Serve-like", "tab:orange")):
        points = [d for d in runs[label].decisions if d.source == "tick" and lo <= d.t <= hi]
        axis.step([(d.t - lo) / 60 for d in points], [d.ready for d in points], where="post",
                  color=color, label=f"{label}: ready replicas")
    axis.set_xlabel("minutes")
    axis.set_ylabel("requests / replicas")
    axis.set_title(f"{name}: replicas against concurrency (target {target:g} per replica)")
    axis.legend(loc="upper right")
    figure.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(PLOT)
    plt.close(figure)
    return name


def render(comparison: list[dict[str, Any]], versus: dict[str, Any]) -> str:
    rows = []
    for row in comparison:
        for policy in ("fixed_keepalive", "hybrid_histogram"):
            result = row[policy]
            rows.append([row["model"], policy, result["cold_starts"],
                         f"{result['cold_start_fraction']:.2%}",
                         round(result["idle_replica_seconds"]), round(result["p99_latency_ms"]),
                         f"${result['cost']:.2f}"])
    lines = [markdown_table(["replicas", "policy", "cold starts", "fraction", "idle replica-s",
                             "p99 ms", "cost"], rows)]
    for row in comparison:
        lines.append(f"- {row['model']}: hybrid/fixed cold starts {row['cold_start_ratio']:.2f}x, "
                     f"idle replica-seconds {row['idle_ratio']:.2f}x")
    vs_rows = [[policy, versus[key]["cold_starts"], round(versus[key]["p99_latency_ms"]),
                round(versus[key]["replica_seconds"]), f"${versus[key]['cost']:.2f}"]
               for policy, key in (("kpa", "kpa"), ("Ray-Serve-like", "ray_serve_like"))]
    lines.append("")
    lines.append(markdown_table(["policy (bursty only)", "cold starts", "p99 ms", "replica-s",
                                 "cost"], vs_rows))
    lines.append(f"- kpa/Ray-like: p99 {versus['p99_ratio']:.2f}x, replica-seconds "
                 f"{versus['replica_seconds_ratio']:.2f}x")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--deployments", type=int, default=50)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    started = timestamp()
    trace = generate_trace(args.deployments, args.hours, args.seed)
    trace_path = BENCH_DIR / "results" / f"trace-{args.deployments}x{args.hours:g}h-seed{args.seed}.csv"
    trace_path.parent.mkdir(parents=True, exist_ok=True)
    write_trace(trace_path, trace)
    log(f"trace: {len(trace):,} invocations of {args.deployments} deployments over "
        f"{args.hours:g} h -> {trace_path}")
    comparison = hybrid_vs_fixed(trace)
    versus = kpa_vs_ray(trace)
    plotted = plot(trace)
    log(f"plot of {plotted} -> {PLOT}")
    payload = {"benchmark": "autoscaling", "started": started, "machine": machine_info(),
               "config": {"deployments": args.deployments, "hours": args.hours, "seed": args.seed,
                          "cold_start_ms": COLD_START_MS, "keepalive_s": KEEPALIVE_S,
                          "invocations": len(trace)},
               "hybrid_vs_fixed": comparison, "kpa_vs_ray_serve_like": versus,
               "plot": {"deployment": plotted, "path": str(PLOT)}}
    path = write_results("autoscaling", payload)
    print(render(comparison, versus), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(payload, indent=2))
    log(f"results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
