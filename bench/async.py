"""Async invocations: Stratus (``?mode=async``) vs Celery 5.7 (Redis broker and backend).

    .venv/bin/python bench/async.py [--quick] [--n 5000] [--only stratus,celery-prefork] [--json]

Each system runs ONE worker process: a Stratus deployment with max 1 replica (its queue in the
metadata store, and as ``stratus-redis`` in Redis Streams), a Celery worker ``-c 1`` with the
prefork pool (Celery's default) and, as a second peer, the solo pool. In the same run, per
system: (a) enqueue rate, N submissions from a 32-way concurrent client (httpx.AsyncClient /
``apply_async`` in threads) while the worker runs; (b) end-to-end no-op rate of that batch,
first submit to the last result observed; (c) idle latency from the client's send to the handler's start, one
at a time; (d) from zero: Stratus at 0 replicas vs a Celery worker started with the clock;
(e) workflow overhead per step; (f) ``bench/noop.py --only stratus`` before the async work
(``--sync-before``) and now. Results, with machine info, go to
``bench/results/async-<timestamp>.json``; a markdown table is printed (to stderr with
``--json``, which prints the JSON document on stdout instead).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Callable
from typing import Any

import stratus_async
from async_report import render
from celery_target import POOLS, CeleryPeer, ensure_celery_venv, flush_redis
from common import log, machine_info, parse_only, percentile, publish, timestamp
from stratus_target import StratusServer, has_ready_replica, no_replicas
from sync_noop import sync_before_after
from workflow_overhead import workflow_overhead

# stratus keeps its queue in the metadata store (SQLite, the default); stratus-redis in Redis
# Streams (STRATUS_QUEUE_URL), the same Redis as Celery's broker, in its own db.
TARGETS = ("stratus", "stratus-redis", *(f"celery-{pool}" for pool in POOLS))
CELERY_DB = 13  # flushed at the start of every Celery run
STRATUS_REDIS_DB = 14  # flushed at the start of the stratus-redis run
CONFIG_KEYS = ("n", "concurrency", "latency_n", "gap", "poll", "cold_runs", "settle", "jitter",
               "sync_before", "sync_duration",
               "sync_repeats", "workflow_n", "quick")
FLAGS = ["--max-replicas", "1", "--max-concurrency", "64"]


def loadavg() -> tuple[float, ...]:
    return tuple(round(x, 2) for x in os.getloadavg())


def summarize_latency(samples: list[dict[str, float]]) -> dict[str, Any]:
    starts = [s["to_start"] * 1000 for s in samples]
    results = [s["to_result"] * 1000 for s in samples]
    # Stratus's samples also say where the time went (stored, 202, claimed, finished).
    path = {key: percentile([s[key] * 1000 for s in samples], 50)
            for key in ("to_created", "to_202", "to_claimed", "to_start", "to_finished", "to_result")
            if key in samples[0]}
    return {"path_p50_ms": path,
            "to_start_p50_ms": percentile(starts, 50), "to_start_p95_ms": percentile(starts, 95),
            "to_start_max_ms": max(starts), "to_result_p50_ms": percentile(results, 50),
            "to_result_p95_ms": percentile(results, 95), "samples": len(samples)}


def summarize_throughput(run: dict[str, Any]) -> dict[str, Any]:
    if run["accepted"] != run["n"] or run["succeeded"] != run["n"]:
        log(f"WARNING: {run['n']} sent, {run['accepted']} accepted, {run['succeeded']} succeeded")
    return {**run, "enqueue_per_s": run["accepted"] / run["enqueue_s"],
            "e2e_per_s": run["succeeded"] / run["e2e_s"]}


def summarize_cold(runs: list[dict[str, float]]) -> dict[str, Any]:
    results = [r["to_result_s"] for r in runs]
    starts = [r["to_handler_start_s"] for r in runs]
    return {"runs": runs, "to_result_median_s": percentile(results, 50),
            "to_result_min_s": min(results), "to_result_max_s": max(results),
            "to_handler_start_median_s": percentile(starts, 50)}


def bench_stratus(name: str, args: argparse.Namespace) -> dict[str, Any]:
    env: dict[str, str] = {}
    if name == "stratus-redis":
        env["STRATUS_QUEUE_URL"] = flush_redis(STRATUS_REDIS_DB)
    server = StratusServer(name, env)
    out: dict[str, Any] = {"queue_url": env.get("STRATUS_QUEUE_URL", "metadata store (SQLite)")}
    try:
        server.start()
        server.deploy("async_noop.py", "AsyncNoOp", "async-noop", ["--min-replicas", "1", *FLAGS])
        server.wait_for_replicas("async-noop", has_ready_replica)

        def call(fn: Callable[..., Any], deployment: str, *rest: Any) -> Any:
            return stratus_async.run(fn, server.base_url, server.auth_headers(), deployment,
                                     args.concurrency, *rest)

        log(f"{name}: idle latency, {args.latency_n} one at a time")
        out["latency"] = summarize_latency(
            call(stratus_async.latency, "async-noop", args.latency_n, args.gap, 0.001)["samples"])
        log(f"{name}: latency {out['latency']['to_start_p50_ms']:.2f} ms p50 to handler start")
        log(f"{name}: throughput, {args.n} submissions at c={args.concurrency}")
        out["throughput"] = summarize_throughput(
            call(stratus_async.throughput, "async-noop", args.n, args.concurrency, args.poll, 600.0))
        log_throughput(name, out["throughput"])
        out["workflow"] = workflow_overhead(server, "async-noop", args)
        server.deploy("async_noop.py", "AsyncNoOp", "async-zero",
                      ["--min-replicas", "0", "--scale-to-zero-after", "1", *FLAGS])
        runs = []
        for i in range(args.cold_runs + 1):
            server.wait_for_replicas("async-zero", no_replicas)
            time.sleep(args.settle + random.uniform(0.0, args.jitter))  # no phase-lock with ticks
            run = call(stratus_async.first, "async-zero", 0.005, 120.0)
            log(f"{name}: from zero {run['to_result_s']:.3f}s" + (" (warm-up, discarded)" if not i else ""))
            runs += [run] if i else []
        out["cold"] = summarize_cold(runs)
    finally:
        server.stop()
    return out


def log_throughput(name: str, run: dict[str, Any]) -> None:
    log(f"{name}: enqueue {run['enqueue_per_s']:,.0f}/s, end-to-end {run['e2e_per_s']:,.0f}/s "
        f"({run['succeeded']}/{run['n']} succeeded)")


def bench_celery(pool: str, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"venv_check_s": round(ensure_celery_venv(), 1)}
    peer = CeleryPeer(pool, CELERY_DB)
    out["celery_version"] = peer.version
    out["worker_command"] = " ".join(peer.worker_command()[1:])
    name = f"celery-{pool}"
    try:
        peer.flush()
        peer.start()
        log(f"{name}: idle latency, {args.latency_n} one at a time")
        run = peer.client("latency", "--n", str(args.latency_n), "--gap", str(args.gap))
        out["latency"] = summarize_latency(run["samples"])
        log(f"{name}: latency {out['latency']['to_start_p50_ms']:.2f} ms p50 to handler start")
        log(f"{name}: throughput, {args.n} submissions at c={args.concurrency}")
        out["throughput"] = summarize_throughput(peer.client(
            "throughput", "--n", str(args.n), "--concurrency", str(args.concurrency),
            "--poll", str(args.poll)))
        log_throughput(name, out["throughput"])
        runs = []
        for i in range(args.cold_runs + 1):
            time.sleep(args.settle + random.uniform(0.0, args.jitter))
            run = peer.cold_start()
            log(f"{name}: from zero {run['to_result_s']:.3f}s" + (" (warm-up, discarded)" if not i else ""))
            runs += [run] if i else []
        out["cold"] = summarize_cold(runs)
    finally:
        peer.stop()
        peer.flush()
    return out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--n", type=int, default=5000, help="submissions for (a) and (b)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent submitters")
    parser.add_argument("--latency-n", type=int, default=200, help="samples for (c)")
    parser.add_argument("--gap", type=float, default=0.02, help="idle seconds before each (c) sample")
    parser.add_argument("--poll", type=float, default=0.05,
                        help="poll interval while a batch of (b) drains, seconds (both systems)")
    parser.add_argument("--cold-runs", type=int, default=5, help="timed from-zero runs (d)")
    parser.add_argument("--settle", type=float, default=1.0, help="idle seconds before a (d) run")
    parser.add_argument("--jitter", type=float, default=1.0, help="random extra idle, 0..N s")
    parser.add_argument("--workflow-n", type=int, default=100, help="workflow runs for (e)")
    parser.add_argument("--sync-before", default="d312b1d",
                        help="git ref for the 'before' sync no-op run (f); '' skips (f)")
    parser.add_argument("--sync-duration", type=float, default=10.0, help="seconds per wrk level in (f)")
    parser.add_argument("--sync-repeats", type=int, default=2, help="alternating before/after runs (f)")
    parser.add_argument("--quick", action="store_true", help="small N everywhere (smoke run)")
    parser.add_argument("--only", default=",".join(TARGETS), help="subset of " + ",".join(TARGETS))
    parser.add_argument("--json", action="store_true", help="print the JSON result on stdout")
    args = parser.parse_args()
    args.targets = parse_only(args.only, TARGETS)
    if args.quick:
        args.n, args.latency_n, args.cold_runs, args.workflow_n = 500, 30, 1, 10
        args.settle, args.jitter, args.sync_duration, args.sync_repeats = 0.5, 0.0, 3.0, 1
    return args


def main() -> int:
    args = parse_args()
    started = timestamp()
    load_before = loadavg()  # the machine is shared: say how busy it was
    results: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    for name in args.targets:
        try:
            pool = name.removeprefix("celery-")
            results[name] = (bench_stratus(name, args) if name.startswith("stratus")
                             else bench_celery(pool, args))
        except Exception as exc:  # one broken target must not hide the others' numbers
            log(f"{name} FAILED: {exc}")
            failures[name] = f"{type(exc).__name__}: {exc}"
    sync: dict[str, Any] = {}
    if args.sync_before and any(name.startswith("stratus") for name in args.targets):
        try:
            sync = sync_before_after(args.sync_before, args.sync_duration, args.sync_repeats)
        except Exception as exc:
            log(f"sync no-op FAILED: {exc}")
            failures["sync-noop"] = f"{type(exc).__name__}: {exc}"
    payload = {
        "benchmark": "async",
        "started": started,
        "machine": machine_info() | {"loadavg_before": load_before, "loadavg_after": loadavg()},
        "config": {k: getattr(args, k) for k in CONFIG_KEYS} | {"targets": args.targets,
                                                                "celery_redis_db": CELERY_DB},
        "results": results,
        "sync_noop": sync,
        "failures": failures,
    }
    table = render(results, sync, failures)
    table += f"\n- load average (1, 5, 15 min) before {load_before}, after {loadavg()}"
    publish("async", payload, table, args.json)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
