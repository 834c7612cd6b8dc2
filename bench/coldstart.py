"""Cold start: time from zero replicas to the first response, Stratus vs Ray Serve 2.60.

    .venv/bin/python bench/coldstart.py [--runs 10] [--only stratus,ray] [--json]

The handler's ``__init__`` imports torch, builds a 2-layer MLP and runs one forward pass
(``bench/handlers/torch_init.py`` for Stratus, ``bench/peers/ray_coldstart.py`` for Ray).
Before every timed request the harness waits until the system reports no replica in any
state, then idles ``--settle`` s plus a random 0..``--jitter`` s, so each request has to
start a replica. One untimed warm-up run per system fills the page cache first. Results go
to ``bench/results/coldstart-<timestamp>.json``; a markdown table is printed (to stderr
with ``--json``, which prints the JSON document on stdout instead).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from common import (
    HttpResponse,
    http_call,
    log,
    machine_info,
    markdown_table,
    parse_only,
    percentile,
    publish,
    timestamp,
)
from ray_target import RayPeer, ensure_ray_venv
from stratus_target import StratusServer, no_replicas

# stratus-no-preload deploys the same handler with nothing preloaded in the zygote, so its
# replicas import torch in __init__ on every cold start, as Ray's do.
TARGETS = ("stratus", "stratus-no-preload", "ray")
BODY = b'{"x": 1}'
IDLE_SECONDS = 1  # both systems go back to zero after ~1 s without traffic
CONFIG_KEYS = ("runs", "warmup_runs", "settle", "jitter", "timeout", "ray_metrics_interval")


@dataclass
class ColdTarget:
    url: str
    headers: dict[str, str]
    wait_for_zero: Callable[[], float]
    was_cold: Callable[[HttpResponse], bool | None] = lambda _resp: None
    meta: dict[str, Any] = field(default_factory=dict)


@contextmanager
def stratus_target(preload: bool) -> Iterator[ColdTarget]:
    server = StratusServer("stratus-coldstart")
    name = "torch-init"
    try:
        server.start()
        flags = ["--min-replicas", "0", "--max-replicas", "1"]
        flags += ["--scale-to-zero-after", str(IDLE_SECONDS)]
        flags += ["--preload", "torch"] if preload else ["--no-preload"]
        server.deploy("torch_init.py", "TorchInit", name, flags)

        def cold_header(resp: HttpResponse) -> bool | None:
            value = resp.headers.get("x-stratus-cold-start")
            return None if value is None else value.lower() == "true"

        yield ColdTarget(
            url=server.invoke_url(name),
            headers=server.auth_headers(),
            wait_for_zero=lambda: server.wait_for_replicas(name, no_replicas),
            was_cold=cold_header,
        )
    finally:
        server.stop()


def ray_metrics_env(interval_s: float) -> dict[str, str]:
    """Serve's autoscaling-metrics cadence. Ray 2.60 scales up from zero only on the
    handle's next periodic push (every ``metrics_interval_s``, default 10 s), so the
    benchmark tunes it down like a user chasing cold-start latency would."""
    value = f"{interval_s:g}"
    return {
        "BENCH_RAY_METRICS_INTERVAL_S": value,  # read by bench/peers/ray_coldstart.py
        "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": value,
        "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": value,
    }


@contextmanager
def ray_target(metrics_interval_s: float) -> Iterator[ColdTarget]:
    ensure_ray_venv()
    env = ray_metrics_env(metrics_interval_s)
    peer = RayPeer("ray_coldstart.py", "ray-coldstart", env=env)
    try:
        peer.start()
        yield ColdTarget(
            url=peer.url,
            headers={},
            wait_for_zero=peer.wait_for_zero_replicas,
            meta={"ray_version": peer.ray_version, "env": env},
        )
    finally:
        peer.stop()


def open_target(name: str, args: argparse.Namespace) -> AbstractContextManager[ColdTarget]:
    if name.startswith("stratus"):
        return stratus_target(preload=name == "stratus")
    return ray_target(args.ray_metrics_interval)


def time_one(target: ColdTarget, args: argparse.Namespace) -> dict[str, Any]:
    waited = target.wait_for_zero()
    # A random extra idle time keeps runs from phase-locking with periodic loops (Ray's
    # metrics push, a reconciler tick), which would bias every sample the same way.
    idle_s = args.settle + random.uniform(0.0, args.jitter)
    time.sleep(idle_s)
    headers = {"Content-Type": "application/json", **target.headers}
    started = time.perf_counter()
    resp = http_call("POST", target.url, BODY, headers, timeout=args.timeout)
    elapsed = time.perf_counter() - started
    if resp.status != 200:
        raise RuntimeError(f"POST {target.url} -> {resp.status} {resp.body[:300]!r}")
    resp.json()
    return {
        "seconds": elapsed,
        "waited_for_zero_s": waited,
        "idle_before_request_s": idle_s,
        "cold_header": target.was_cold(resp),
    }


def bench_target(name: str, args: argparse.Namespace) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    with open_target(name, args) as target:
        for i in range(args.warmup_runs):
            run = time_one(target, args)
            log(f"{name}: warm-up run {i + 1}: {run['seconds']:.3f}s (discarded)")
        for i in range(args.runs):
            run = time_one(target, args)
            log(f"{name}: run {i + 1}/{args.runs}: {run['seconds']:.3f}s")
            runs.append(run)
        meta = target.meta
    seconds = [r["seconds"] for r in runs]
    not_cold = sum(1 for r in runs if r["cold_header"] is False)
    if not_cold:
        log(f"{name}: WARNING {not_cold} run(s) answered X-Stratus-Cold-Start: false")
    return {
        "system": name,
        "runs": runs,
        "median_s": percentile(seconds, 50),
        "p90_s": percentile(seconds, 90),
        "min_s": min(seconds),
        "max_s": max(seconds),
        "not_cold_runs": not_cold,
        "meta": meta,
    }


def render(summaries: list[dict[str, Any]], failures: dict[str, str]) -> str:
    keys = ("median_s", "p90_s", "min_s", "max_s", "not_cold_runs")
    rows = [[s["system"], len(s["runs"]), *(s[k] for k in keys)] for s in summaries]
    headers = ["system", "runs", "median s", "p90 s", "min s", "max s", "not cold"]
    table = markdown_table(headers, rows)
    by_name = {s["system"]: s for s in summaries}
    lines = [table]
    for variant in ("stratus", "stratus-no-preload"):
        if variant in by_name and "ray" in by_name:
            ratio = by_name["ray"]["median_s"] / by_name[variant]["median_s"]
            lines.append(f"\nRay median / {variant} median = {ratio:.2f}x")
    lines += [f"- {name} FAILED: {error.splitlines()[0]}" for name, error in failures.items()]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="timed cold starts per system")
    parser.add_argument("--warmup-runs", type=int, default=1, help="untimed cold starts first")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds idle after zero")
    parser.add_argument("--jitter", type=float, default=1.0, help="random extra idle, 0..N s")
    parser.add_argument("--timeout", type=float, default=180.0, help="per-request timeout (s)")
    parser.add_argument(
        "--ray-metrics-interval",
        type=float,
        default=0.5,
        help="Ray Serve autoscaling metrics_interval_s (Ray's default: 10)",
    )
    parser.add_argument("--only", default=",".join(TARGETS), help="subset of " + ",".join(TARGETS))
    parser.add_argument("--json", action="store_true", help="print the JSON result on stdout")
    args = parser.parse_args()
    args.targets = parse_only(args.only, TARGETS)
    return args


def main() -> int:
    args = parse_args()
    started = timestamp()
    summaries: list[dict[str, Any]] = []
    failures: dict[str, str] = {}
    for name in args.targets:
        try:
            summaries.append(bench_target(name, args))
        except Exception as exc:  # one broken target must not hide the others' numbers
            log(f"{name} FAILED: {exc}")
            failures[name] = f"{type(exc).__name__}: {exc}"
    by_name = {s["system"]: s for s in summaries}
    ratio = (
        by_name["ray"]["median_s"] / by_name["stratus"]["median_s"]
        if "ray" in by_name and "stratus" in by_name
        else None
    )
    payload = {
        "benchmark": "coldstart",
        "started": started,
        "machine": machine_info(),
        "config": {k: getattr(args, k) for k in CONFIG_KEYS}
        | {"targets": args.targets, "idle_seconds_before_zero": IDLE_SECONDS},
        "results": summaries,
        "ray_over_stratus_median": ratio,
        "failures": failures,
    }
    publish("coldstart", payload, render(summaries, failures), args.json)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
