"""Dynamic batching: a torch MLP served per request vs through ``@stratus.batch``, and Ray
Serve's ``@serve.batch`` as the peer.

    .venv/bin/python bench/batching.py [--duration 5] [--rounds 3] [--warmup 2] [--threads 2]
                                       [--concurrency 1,32] [--only unbatched,batched,ray] [--json]

The model (``bench/handlers/mlp.py``, ``bench/peers/ray_mlp.py``): 64 -> 3 x Linear(4096,
4096) -> 16, ReLU between, ~200 MB of float32 weights, so one item's forward pass is bound
by memory bandwidth. Targets, one replica each, torch on ``--threads`` threads:

* unbatched: Stratus ``MLP``, one forward pass per request (``--max-concurrency 32``);
* batched: Stratus ``BatchedMLP``, ``@stratus.batch(max_batch_size=32, max_wait_ms=5)``;
* ray: Ray Serve 2.60, ``@serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)``.

Every request POSTs the same 64 floats (wrk, one thread); each target's answer is checked
against the others' first. At each concurrency, after a warm-up, ``--rounds`` measurements
alternate between the Stratus targets (Ray runs its rounds after them, in its own cluster);
a row is the target's median round by throughput. For the batched Stratus target the mean
batch size over a round comes from ``stratus_batch_size`` at ``/metrics``. Results, with machine info,
go to ``bench/results/batching-<timestamp>.json``; a markdown table is printed (to stderr
with ``--json``, which prints the JSON document on stdout instead).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from common import (
    WRK_SETTINGS,
    http_call,
    load_arguments,
    load_payload,
    log,
    markdown_table,
    parse_load_arguments,
    publish,
    run_notes,
)
from loadgen import run_wrk, write_post_lua
from ray_target import RayPeer, ensure_ray_venv
from stratus_target import StratusServer, has_ready_replica

TARGETS = ("unbatched", "batched", "ray")
DEPLOYMENTS = {"unbatched": ("MLP", "mlp"), "batched": ("BatchedMLP", "mlp-batched")}
BODY = json.dumps({"x": [round(math.sin(i), 4) for i in range(64)]})
TOLERANCE = 1e-4
HEARTBEAT_SETTLE_S = 1.5  # replicas report batch sizes on their 1 s heartbeat


@dataclass
class Endpoint:
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    batch_sizes: Any = None  # () -> (batches, items) so far, where the target can tell
    meta: dict[str, Any] = field(default_factory=dict)


def stratus_batch_sizes(server: StratusServer, deployment: str) -> tuple[float, float]:
    resp = http_call("GET", f"{server.base_url}/metrics", headers=server.auth_headers())
    count = total = 0.0
    for family in text_string_to_metric_families(resp.body.decode()):
        for sample in family.samples if family.name == "stratus_batch_size" else ():
            if sample.labels.get("deployment") == deployment:
                if sample.name.endswith("_count"):
                    count += sample.value
                elif sample.name.endswith("_sum"):
                    total += sample.value
    return count, total


@contextmanager
def stratus_endpoints(names: list[str], threads: int) -> Iterator[dict[str, Endpoint]]:
    server = StratusServer("stratus-batching")
    try:
        server.start()
        endpoints = {}
        for target in names:
            handler, deployment = DEPLOYMENTS[target]
            flags = ["--min-replicas", "1", "--max-replicas", "1", "--max-concurrency", "32",
                     "--threads", str(threads), "--preload", "torch"]
            server.deploy("mlp.py", handler, deployment, flags)
            server.wait_for_replicas(deployment, has_ready_replica)
            sizes = (lambda d=deployment: stratus_batch_sizes(server, d)) if target == "batched" else None
            endpoints[target] = Endpoint(server.invoke_url(deployment), server.auth_headers(), sizes,
                                         {"deployment": deployment, "handler": f"mlp.py:{handler}"})
        yield endpoints
    finally:
        server.stop()


@contextmanager
def ray_endpoint(threads: int) -> Iterator[Endpoint]:
    setup_s = ensure_ray_venv()
    peer = RayPeer("ray_mlp.py", "ray-mlp", env={"BENCH_MLP_THREADS": str(threads)})
    try:
        peer.start()
        yield Endpoint(peer.url, meta={"ray_version": peer.ray_version, "venv_check_s": round(setup_s, 1)})
    finally:
        peer.stop()


def answer(name: str, endpoint: Endpoint) -> list[float]:
    headers = {"Content-Type": "application/json", **endpoint.headers}
    resp = http_call("POST", endpoint.url, BODY.encode(), headers, timeout=60)
    if resp.status != 200:
        raise RuntimeError(f"{name}: POST {endpoint.url} -> {resp.status} {resp.body[:300]!r}")
    y: list[float] = resp.json()["y"]
    return y


def sample(name: str, endpoint: Endpoint, lua: Path, conns: int, duration: float) -> dict[str, Any]:
    """One wrk measurement, with the mean batch size over it where the target reports one."""
    before = None
    if endpoint.batch_sizes is not None:
        time.sleep(HEARTBEAT_SETTLE_S)
        before = endpoint.batch_sizes()
    result = run_wrk(endpoint.url, conns, duration, lua, timeout_s=30)
    mean_batch = None
    if before is not None:
        time.sleep(HEARTBEAT_SETTLE_S)
        batches, items = (a - b for a, b in zip(endpoint.batch_sizes(), before, strict=True))
        mean_batch = items / batches if batches else None
    log(f"{name} c={conns}: {result.requests_per_sec:,.1f} req/s, p50 {result.p50_ms:.1f} ms, "
        f"p99 {result.p99_ms:.1f} ms" + (f", mean batch {mean_batch:.1f}" if mean_batch else ""))
    return {"mean_batch": mean_batch, **asdict(result)}


def measure(endpoints: dict[str, Endpoint], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Rounds alternate between the targets, so a burst of load from elsewhere on this shared
    machine hits them alike; each target's row is its median round by throughput."""
    luas = {name: write_post_lua(BODY, endpoint.headers) for name, endpoint in endpoints.items()}
    rows = []
    try:
        for conns in args.concurrency:
            for name, endpoint in endpoints.items():
                log(f"{name}: warm-up {args.warmup:g}s at c={conns}")
                run_wrk(endpoint.url, conns, args.warmup, luas[name])
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in endpoints}
            for round_no in range(args.rounds):
                for name, endpoint in endpoints.items():
                    log(f"{name}: round {round_no + 1}/{args.rounds}, {args.duration:g}s at c={conns}")
                    runs[name].append(sample(name, endpoint, luas[name], conns, args.duration))
            for name, samples in runs.items():
                ordered = sorted(samples, key=lambda r: r["requests_per_sec"])
                rows.append({"system": name, "concurrency": conns, **ordered[len(ordered) // 2],
                             "rounds_rps": [r["requests_per_sec"] for r in samples],
                             "rounds_mean_batch": [r["mean_batch"] for r in samples]})
    finally:
        for lua in luas.values():
            lua.unlink(missing_ok=True)
    return rows


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Throughput of each target against the unbatched Stratus handler at the same concurrency."""
    base = {r["concurrency"]: r["requests_per_sec"] for r in rows if r["system"] == "unbatched"}
    for row in rows:
        ref = base.get(row["concurrency"])
        row["vs_unbatched"] = row["requests_per_sec"] / ref if ref else None


def render(rows: list[dict[str, Any]], failures: dict[str, str]) -> str:
    table = markdown_table(
        ["system", "concurrency", "req/s (median)", "rounds req/s", "p50 ms", "p99 ms", "mean batch",
         "errors", "vs unbatched"],
        [[r["system"], r["concurrency"], r["requests_per_sec"],
          " / ".join(f"{v:.0f}" for v in r["rounds_rps"]), r["p50_ms"], r["p99_ms"], r["mean_batch"],
          r["non_2xx"] + sum(r["socket_errors"].values()),
          f"{r['vs_unbatched']:.2f}x" if r["vs_unbatched"] else None] for r in rows],
    )
    notes = run_notes(rows, failures)
    return "\n".join([table, *notes])


def parse_args() -> argparse.Namespace:
    parser = load_arguments(__doc__, TARGETS, duration=5.0)
    parser.add_argument("--rounds", type=int, default=3, help="measurements per target and level")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per replica")
    return parse_load_arguments(parser, TARGETS)


def run_targets(args: argparse.Namespace, rows: list[dict[str, Any]], meta: dict[str, Any],
                answers: dict[str, list[float]], failures: dict[str, str]) -> None:
    stratus = [t for t in args.targets if t in DEPLOYMENTS]
    groups: list[tuple[list[str], Any]] = []
    if stratus:
        groups.append((stratus, lambda: stratus_endpoints(stratus, args.threads)))
    if "ray" in args.targets:
        groups.append((["ray"], lambda: _single("ray", ray_endpoint(args.threads))))
    for names, opener in groups:
        try:
            with opener() as endpoints:
                for name in names:
                    answers[name] = answer(name, endpoints[name])
                    meta[name] = endpoints[name].meta
                rows += measure(endpoints, args)
        except Exception as exc:  # one broken target must not hide the others' numbers
            log(f"{','.join(names)} FAILED: {exc}")
            for name in names:
                failures.setdefault(name, f"{type(exc).__name__}: {exc}")


@contextmanager
def _single(name: str, manager: Any) -> Iterator[dict[str, Endpoint]]:
    with manager as endpoint:
        yield {name: endpoint}


def main() -> int:
    args = parse_args()
    started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    rows: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}
    answers: dict[str, list[float]] = {}
    failures: dict[str, str] = {}
    run_targets(args, rows, meta, answers, failures)
    reference = next(iter(answers.values()), None)
    for name, y in answers.items():
        if reference is not None and max(abs(a - b) for a, b in zip(y, reference, strict=True)) > TOLERANCE:
            failures[f"{name}-answer"] = f"answer differs from {next(iter(answers))}'s: {y[:3]}..."
    add_ratios(rows)
    payload = load_payload(
        "batching", started, args, (*WRK_SETTINGS, "rounds"),
        {"body": "64 floats", "model": "64 -> 3 x 4096 -> 16 MLP, float32"}, meta, rows, failures,
        answers_agree=not any(k.endswith("-answer") for k in failures))
    publish("batching", payload, render(rows, failures), args.json)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
