"""What routing between revisions costs on the request path: one revision, a 90/10 split, a
sticky-header split and a shadow copy, against Ray Serve 2.60's single no-op deployment.

    .venv/bin/python bench/traffic.py [--duration 10] [--warmup 2] [--only single,shadow] [--json]

One Stratus server runs every Stratus case in turn on the same no-op handler (revision 1, and
revision 2 recorded with ``--no-promote``); the traffic is reset between cases with
``stratus traffic``. Each case gets ``POST {"x": 1}`` from wrk at concurrency 1 and 32 after a
warm-up. Results go to ``bench/results/traffic-<timestamp>.json`` and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from common import (
    NOOP_BODY,
    WRK_SETTINGS,
    http_call,
    load_arguments,
    load_payload,
    log,
    markdown_table,
    parse_load_arguments,
    publish,
    run_notes,
    timestamp,
)
from noop import Endpoint, add_ratios, measure, ray_endpoint
from stratus_target import StratusServer, has_ready_replica

# Each Stratus case: `stratus traffic` arguments, and extra request headers.
CASES: dict[str, tuple[list[str], dict[str, str]]] = {
    "single": (["1=100", "--no-shadow", "--no-sticky"], {}),
    "split-90-10": (["1=90", "2=10"], {}),
    "sticky-50-50": (["1=50", "2=50", "--sticky-header", "x-user"], {"x-user": "user-42"}),
    "shadow": (["1=100", "2=0", "--no-sticky", "--shadow", "2"], {}),
}
TARGETS = (*CASES, "ray")
BASELINE = "single"


@contextmanager
def stratus_server() -> Iterator[StratusServer]:
    server = StratusServer("stratus-traffic")
    try:
        server.start()
        flags = ["--min-replicas", "1", "--max-replicas", "1", "--max-concurrency", "64"]
        server.deploy("noop.py", "NoOp", "noop", flags)
        server.wait_for_replicas("noop", has_ready_replica)
        server.deploy("noop.py", "NoOp", "noop", [*flags, "--config", '{"v": 2}', "--no-promote"])
        yield server
    finally:
        server.stop()


def configure(server: StratusServer, case: str) -> Endpoint:
    """Set the case's traffic, then wait until every revision it names answers."""
    arguments, headers = CASES[case]
    server.cli(["traffic", "noop", *arguments])
    revisions = [int(a.split("=")[0]) for a in arguments if "=" in a]
    endpoint = Endpoint(server.invoke_url("noop"), headers={**server.auth_headers(), **headers})
    deadline = time.monotonic() + 60
    for revision in revisions:
        pinned = {**endpoint.headers, "x-stratus-revision": str(revision),
                  "Content-Type": "application/json"}
        while http_call("POST", endpoint.url, NOOP_BODY.encode(), pinned).status != 200:
            if time.monotonic() > deadline:
                raise TimeoutError(f"revision {revision} never answered")
            time.sleep(0.1)
    time.sleep(1.0)  # let the autoscaler settle on the new split
    return endpoint


def shadow_served(server: StratusServer) -> dict[str, Any]:
    """The shadow's own count of the copies it answered, from the traffic view."""
    resp = http_call("GET", f"{server.base_url}/api/deployments/noop/traffic",
                     headers=server.auth_headers())
    stats: dict[str, Any] = json.loads(resp.body)["revisions"].get("2", {})
    return stats


def run(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, str]]:
    rows: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}
    failures: dict[str, str] = {}
    cases = [case for case in CASES if case in args.targets]
    if cases:
        with stratus_server() as server:
            for case in cases:
                try:
                    rows += measure(case, configure(server, case), args)
                    if case == "shadow":
                        meta["shadow"] = shadow_served(server)
                except Exception as exc:  # one broken case must not hide the others' numbers
                    log(f"{case} FAILED: {exc}")
                    failures[case] = f"{type(exc).__name__}: {exc}"
    if "ray" in args.targets:
        try:
            with ray_endpoint() as endpoint:
                rows += measure("ray", endpoint, args)
            meta["ray"] = endpoint.meta
        except Exception as exc:
            log(f"ray FAILED: {exc}")
            failures["ray"] = f"{type(exc).__name__}: {exc}"
    return rows, meta, failures


def render(rows: list[dict[str, Any]], failures: dict[str, str]) -> str:
    table = markdown_table(
        ["case", "concurrency", "req/s", "p50 ms", "p99 ms", "errors", "vs single revision"],
        [[r["system"], r["concurrency"], r["requests_per_sec"], r["p50_ms"], r["p99_ms"],
          r["non_2xx"] + sum(r["socket_errors"].values()), r["headline"]] for r in rows],
    )
    return "\n".join([table, *run_notes(rows, failures)])


def main() -> int:
    parser = load_arguments(__doc__, TARGETS, duration=10.0)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    args = parse_load_arguments(parser, TARGETS)
    started = timestamp()
    rows, meta, failures = run(args)
    add_ratios(rows, BASELINE)
    payload = load_payload("traffic", started, args, WRK_SETTINGS,
                           {"body": NOOP_BODY, "cases": CASES}, meta, rows, failures)
    publish("traffic", payload, render(rows, failures), args.json)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
