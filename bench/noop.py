"""No-op request overhead: plain Starlette (the ceiling) vs Stratus vs Ray Serve 2.60.

    .venv/bin/python bench/noop.py [--duration 10] [--warmup 2] [--only starlette,ray] [--json]

Each target gets ``POST {"x": 1}`` from wrk (one thread, Lua script for the body and auth
header) at concurrency 1 and 32 after a warm-up at the same concurrency. Results, with
machine info, go to ``bench/results/noop-<timestamp>.json``; a markdown table is printed
(to stderr with ``--json``, which prints the JSON document on stdout instead).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from common import (
    BENCH_DIR,
    MAIN_VENV,
    NOOP_BODY,
    WRK_SETTINGS,
    free_port,
    http_call,
    load_arguments,
    load_payload,
    log,
    markdown_table,
    parse_load_arguments,
    publish,
    run_notes,
    start_process,
    stop_process,
    timestamp,
    wait_until_ready,
)
from loadgen import run_wrk, write_post_lua
from ray_target import RayPeer, ensure_ray_venv
from stratus_target import StratusServer, has_ready_replica

TARGETS = ("starlette", "stratus", "ray")
BASELINE = "starlette"


@dataclass
class Endpoint:
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


@contextmanager
def starlette_endpoint() -> Iterator[Endpoint]:
    port = free_port()
    script = BENCH_DIR / "peers" / "starlette_noop.py"
    proc = start_process(
        "starlette-noop", [str(MAIN_VENV / "bin" / "python"), str(script), "--port", str(port)]
    )
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/readyz", proc)
        yield Endpoint(f"http://127.0.0.1:{port}/", meta={"server": "uvicorn+uvloop+httptools"})
    finally:
        stop_process(proc)


@contextmanager
def stratus_endpoint() -> Iterator[Endpoint]:
    server = StratusServer("stratus-noop")
    try:
        server.start()
        flags = ["--min-replicas", "1", "--max-replicas", "1", "--max-concurrency", "64"]
        server.deploy("noop.py", "NoOp", "noop", flags)
        server.wait_for_replicas("noop", has_ready_replica)
        yield Endpoint(server.invoke_url("noop"), headers=server.auth_headers())
    finally:
        server.stop()


@contextmanager
def ray_endpoint() -> Iterator[Endpoint]:
    setup_s = ensure_ray_venv()
    peer = RayPeer("ray_noop.py", "ray-noop")
    try:
        peer.start()
        meta = {"ray_version": peer.ray_version, "venv_check_s": round(setup_s, 1)}
        yield Endpoint(peer.url, meta=meta)
    finally:
        peer.stop()


ENDPOINTS: dict[str, Callable[[], AbstractContextManager[Endpoint]]] = {
    "starlette": starlette_endpoint,
    "stratus": stratus_endpoint,
    "ray": ray_endpoint,
}


def check_endpoint(name: str, endpoint: Endpoint) -> None:
    """One request by hand: fail loudly on a non-200 or non-JSON answer before wrk runs."""
    headers = {"Content-Type": "application/json", **endpoint.headers}
    resp = http_call("POST", endpoint.url, NOOP_BODY.encode(), headers)
    if resp.status != 200:
        raise RuntimeError(f"{name}: POST {endpoint.url} -> {resp.status} {resp.body[:300]!r}")
    resp.json()


def measure(name: str, endpoint: Endpoint, args: argparse.Namespace) -> list[dict[str, Any]]:
    """wrk at each concurrency of ``args`` after a warm-up: one row per level."""
    rows: list[dict[str, Any]] = []
    check_endpoint(name, endpoint)
    lua = write_post_lua(NOOP_BODY, endpoint.headers)
    try:
        for conns in args.concurrency:
            log(f"{name}: warm-up {args.warmup:g}s at c={conns}")
            run_wrk(endpoint.url, conns, args.warmup, lua, threads=args.threads)
            log(f"{name}: measuring {args.duration:g}s at c={conns}")
            result = run_wrk(endpoint.url, conns, args.duration, lua, threads=args.threads)
            log(
                f"{name} c={conns}: {result.requests_per_sec:,.0f} req/s, "
                f"p50 {result.p50_ms:.3f} ms, p99 {result.p99_ms:.3f} ms"
            )
            rows.append({"system": name, "concurrency": conns, **asdict(result)})
    finally:
        lua.unlink(missing_ok=True)
    return rows


def bench_target(name: str, args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    with ENDPOINTS[name]() as endpoint:
        rows = measure(name, endpoint, args)
    return rows, endpoint.meta


def add_ratios(rows: list[dict[str, Any]], baseline: str = BASELINE) -> None:
    """Throughput ratio vs the baseline at the highest concurrency, p50 delta at c=1."""
    base = {r["concurrency"]: r for r in rows if r["system"] == baseline}
    top = max((r["concurrency"] for r in rows), default=0)
    for row in rows:
        ref = base.get(row["concurrency"])
        row["throughput_ratio"] = (
            row["requests_per_sec"] / ref["requests_per_sec"] if ref and ref["requests_per_sec"] else None
        )
        row["p50_delta_ms"] = row["p50_ms"] - ref["p50_ms"] if ref else None
        row["headline"] = (
            f"{row['throughput_ratio']:.2f}x req/s"
            if row["concurrency"] == top and ref
            else f"{row['p50_delta_ms']:+.3f} ms p50"
            if row["concurrency"] == 1 and ref
            else None
        )


def render(rows: list[dict[str, Any]], failures: dict[str, str]) -> str:
    table = markdown_table(
        ["system", "concurrency", "req/s", "p50 ms", "p99 ms", "errors", "vs starlette"],
        [
            [
                r["system"],
                r["concurrency"],
                r["requests_per_sec"],
                r["p50_ms"],
                r["p99_ms"],
                r["non_2xx"] + sum(r["socket_errors"].values()),
                r["headline"],
            ]
            for r in rows
        ],
    )
    notes = run_notes(rows, failures)
    return "\n".join([table, *notes])


def parse_args() -> argparse.Namespace:
    parser = load_arguments(__doc__, TARGETS, duration=10.0)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    return parse_load_arguments(parser, TARGETS)


def main() -> int:
    args = parse_args()
    started = timestamp()
    rows: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}
    failures: dict[str, str] = {}
    for name in args.targets:
        try:
            target_rows, meta[name] = bench_target(name, args)
            rows += target_rows
        except Exception as exc:  # one broken target must not hide the others' numbers
            log(f"{name} FAILED: {exc}")
            failures[name] = f"{type(exc).__name__}: {exc}"
    add_ratios(rows)
    payload = load_payload("noop", started, args, WRK_SETTINGS, {"body": NOOP_BODY}, meta,
                           rows, failures)
    publish("noop", payload, render(rows, failures), args.json)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
