"""Reliability beside a peer: Stratus and Ray Serve 2.60 under the same replica kills and the
same overload (issue 21), in one run, one system at a time.

    .venv/bin/python bench/reliability.py [--only stratus,ray] [--scenarios kills,overload] [--json]

Both scenarios are the chaos tests' (``tests/chaos/``), with their client (``tests/overload.py``
on ``tests/keepalive.py``: open-loop, raw keep-alive HTTP/1.1) and the same handler on both
systems (``bench/handlers/sleeper.py``: sleeps, answers its pid).

* kills: 3 replicas of 8 slots, 200 requests a second for 60 s of a 50 ms sleep, and a
  SIGKILL of a random ready replica every 2 s. Stratus with ``retries: {attempts: 2}``,
  ``idempotent`` true, then false; Ray Serve (``num_replicas=3, max_ongoing_requests=8``),
  whose RUNNING replicas' pids its controller gives (``ray::ServeReplica`` workers).
* overload: 2 replicas of 2 slots, a 100 ms sleep (capacity 40 a second); unloaded (10/s for
  10 s), at capacity (40/s for 10 s), then 120/s for 30 s with the bound on (Stratus's
  adaptive shedding; Ray's ``max_queued_requests=2``) and with the queue alone (both 1,000).

Results go to ``bench/results/reliability-<timestamp>.json``; the tables are printed (to stderr
with ``--json``, which prints the JSON document on stdout).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from common import http_call, log, machine_info, markdown_table, parse_only, publish, timestamp
from ray_target import RayPeer, ensure_ray_venv
from reliability_load import LoadAverage, figures, open_loop, under_kills
from stratus_target import StratusServer

TARGETS = ("stratus", "ray")
SCENARIOS = ("kills", "overload")
KILL_RATE, KILL_EVERY, KILL_SLEEP_S = 200.0, 2.0, 0.05
OVERLOAD_RATE, SERVICE_S, CAPACITY = 120.0, 0.1, 40.0  # two replicas x two 100 ms slots
STEPS = (("unloaded", 10.0, 10.0), ("capacity", CAPACITY, 10.0))  # (run, rate, seconds)


def measured(row: dict[str, Any], run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``row`` with the figures ``run`` returns and the load average meanwhile."""
    load = LoadAverage()
    with load.sampling():
        started = time.monotonic()
        result = run()
    log(f"{row['system']} {row['run']}: {result}")
    return {**row, **result, "wall_s": round(time.monotonic() - started, 1),
            "load_avg": load.range()}


def kills_row(system: str, run: str, url: str, key: str, path: str,
              victims: Callable[[], list[int]], args: argparse.Namespace) -> dict[str, Any]:
    def go() -> dict[str, Any]:
        answers, killed = asyncio.run(under_kills(
            url, key, path, victims, rate=KILL_RATE, seconds=args.kill_seconds,
            every=KILL_EVERY, payload={"sleep": KILL_SLEEP_S}, seed=args.seed))
        return {**figures(answers, args.kill_seconds), "killed": len(killed)}

    return measured({"system": system, "run": run}, go)


def overload_rows(system: str, url: str, key: str, paths: dict[str, str],
                  args: argparse.Namespace) -> list[dict[str, Any]]:
    """The overload test's four runs; ``paths``: the ``bounded`` and ``queued`` routes."""
    plan = [(run, rate, seconds, paths["bounded" if run == "unloaded" else "queued"])
            for run, rate, seconds in STEPS]
    plan += [(f"{bound}, 3x", OVERLOAD_RATE, args.overload_seconds, paths[bound])
             for bound in ("bounded", "queued")]
    return [measured({"system": system, "run": run, "rate": rate, "seconds": seconds},
                     _overload_run(url, key, path, rate, seconds))
            for run, rate, seconds, path in plan]


def _overload_run(url: str, key: str, path: str, rate: float,
                  seconds: float) -> Callable[[], dict[str, Any]]:
    # The overload test's client timeout: 60 s, above the queued runs' longest waits.
    return lambda: figures(open_loop(url, key, path, rate, seconds, {"sleep": SERVICE_S}, 60.0),
                           seconds)


def warm(url: str, key: str, path: str, body: dict[str, Any]) -> None:
    """A second of light load first: both systems' first requests open connections."""
    open_loop(url, key, path, 10.0, 1.0, body, 30.0)


def bench_stratus(scenarios: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    server = StratusServer("stratus-reliability")
    server.start()
    rows = []
    try:
        if "kills" in scenarios:
            for idempotent in (True, False):
                name = "kills-idempotent" if idempotent else "kills-plain"
                server.deploy("sleeper.py", "Sleeper", name, [
                    "--min-replicas", "3", "--max-replicas", "3", "--max-concurrency", "8",
                    "--retries", "2", "--idempotent" if idempotent else "--not-idempotent"])
                server.wait_for_replicas(name, lambda c: c["ready"] >= 3)
                path = f"/api/deployments/{name}/invoke"
                warm(server.base_url, server.key, path, {"sleep": KILL_SLEEP_S})
                rows.append(kills_row(
                    "stratus", f"idempotent={str(idempotent).lower()}", server.base_url,
                    server.key, path, partial(server.replica_pids, name, "ready"), args))
                server.cli(["rm", name])  # its idle replicas out of the next run
        if "overload" in scenarios:
            common = ["--min-replicas", "2", "--max-replicas", "2", "--max-concurrency", "2",
                      "--timeout", "30"]
            for name in ("shed-on", "shed-off"):
                server.deploy("sleeper.py", "Sleeper", name, common)
            shedding = http_call("PATCH", f"{server.base_url}/api/deployments/shed-on",
                                 json.dumps({"shedding": {"adaptive": True}}).encode(),
                                 {**server.auth_headers(), "content-type": "application/json"})
            if shedding.status != 200:
                raise RuntimeError(f"PATCH shedding: {shedding.status} {shedding.body[:300]!r}")
            paths = {"bounded": "/api/deployments/shed-on/invoke",
                     "queued": "/api/deployments/shed-off/invoke"}
            for name, path in zip(("shed-on", "shed-off"), paths.values(), strict=True):
                server.wait_for_replicas(name, lambda c: c["ready"] >= 2)
                warm(server.base_url, server.key, path, {"sleep": SERVICE_S})
            rows += overload_rows("stratus", server.base_url, server.key, paths, args)
    finally:
        server.stop()
    return rows


def bench_ray(scenarios: list[str], args: argparse.Namespace) -> tuple[list[dict[str, Any]], str]:
    rows, version = [], ""
    for scenario in scenarios:
        peer = RayPeer("ray_reliability.py", f"ray-{scenario}", args=["--scenario", scenario])
        peer.start()
        version = peer.ray_version or ""
        try:
            if scenario == "kills":
                warm(peer.url, "", "/", {"sleep": KILL_SLEEP_S})
                rows.append(kills_row("ray", "no retries (none to set)", peer.url, "", "/",
                                      partial(peer.replica_pids, "kills"), args))
            else:
                paths = {"bounded": "/", "queued": "/queued"}
                for path in paths.values():
                    warm(peer.url, "", path, {"sleep": SERVICE_S})
                rows += overload_rows("ray", peer.url, "", paths, args)
        finally:
            peer.stop()
    return rows, version


def tables(rows: list[dict[str, Any]]) -> str:
    kills = [r for r in rows if "killed" in r]
    over = [r for r in rows if "killed" not in r]
    out = []
    if kills:
        out.append(markdown_table(
            ["system", "run", "requests", "killed", "failed", "failed by status",
             "slowest failure ms", "ok p99 ms", "load avg"],
            [[r["system"], r["run"], r["sent"], r["killed"], r["failed"], r["failed_by_status"],
              r["max_failure_ms"], r["p99_ok_ms"], r["load_avg"]] for r in kills]))
    if over:
        out.append(markdown_table(
            ["system", "run", "offered/s", "goodput/s", "p50 ms", "p99 ms", "refused",
             "not 200 by status", "slowest refusal ms", "Retry-After", "load avg"],
            [[r["system"], r["run"], r["rate"], r["goodput"], r["p50_ok_ms"], r["p99_ok_ms"],
              r["refused"], r["failed_by_status"], r["max_refusal_ms"], r["retry_after"],
              r["load_avg"]] for r in over]))
    return "\n\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--only", default=",".join(TARGETS), help="subset of stratus,ray")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="kills,overload")
    parser.add_argument("--kill-seconds", type=float, default=60.0)
    parser.add_argument("--overload-seconds", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=21, help="the killer's choice of victims")
    parser.add_argument("--json", action="store_true", help="print the JSON result on stdout")
    args = parser.parse_args()
    targets, scenarios = parse_only(args.only, TARGETS), parse_only(args.scenarios, SCENARIOS)
    started = timestamp()
    rows: list[dict[str, Any]] = []
    ray_version = None
    if "stratus" in targets:
        rows += bench_stratus(scenarios, args)
    if "ray" in targets:
        ensure_ray_venv()
        ray_rows, ray_version = bench_ray(scenarios, args)
        rows += ray_rows
    payload = {
        "benchmark": "reliability", "started": started, "machine": machine_info(),
        "config": {"targets": targets, "scenarios": scenarios,
                   "kill_seconds": args.kill_seconds, "kill_rate": KILL_RATE,
                   "kill_every_s": KILL_EVERY, "kill_sleep_s": KILL_SLEEP_S,
                   "overload_seconds": args.overload_seconds, "overload_rate": OVERLOAD_RATE,
                   "service_s": SERVICE_S, "seed": args.seed},
        "targets": {"ray": ray_version},
        "results": rows,
    }
    publish("reliability", payload, tables(rows), args.json)


if __name__ == "__main__":
    main()
