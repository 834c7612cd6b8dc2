"""The soak (``make soak``): a mixed workload against one server for ten minutes, its resources
sampled every 10 s, and the slope of each, to show that nothing grows without bound.

    .venv/bin/python bench/soak.py [--duration 600] [--json]

Open-loop load on four deployments at once: JSON invokes (20/s), streamed invokes (2/s,
ndjson), v2 tensor infers (5/s, 64x256 FP32), OpenAI chat completions (1/s, a 2-layer GPT-2
with random weights, 16 tokens); every minute the echo deployment gets a new revision, and
half a minute later it is rolled back. Sampled: the server's RSS, its file descriptors and
threads, the PSS of its whole process tree (zygotes and replicas), the number of processes,
and the SQLite files. The first minute is warm-up and left out of the slopes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from common import RESULTS_DIR, log, machine_info, markdown_table, publish, timestamp
from soak_sampler import SERIES, Sample, slope_per_hour, take
from stratus_target import StratusServer, has_ready_replica

# The tests' tiny GPT-2 builder, imported rather than copied: one definition of that model.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from llm_models import build_tiny_gpt2

RATES = {"echo": 20.0, "stream": 2.0, "tensor": 5.0, "openai": 1.0}
SAMPLE_S = 10.0
WARMUP_S = 60.0
REVISION_EVERY_S = 60.0


def _request(kind: str, server: StratusServer) -> tuple[str, str, dict[str, str], Any]:
    """Method-less request description: (url, body kind, headers, body)."""
    base = server.base_url
    if kind == "echo":
        return f"{base}/api/deployments/soak-echo/invoke", "json", {}, {"n": 1}
    if kind == "stream":
        return (f"{base}/api/deployments/soak-stream/invoke", "json",
                {"accept": "application/x-ndjson"}, {"n": 8})
    if kind == "tensor":
        rows = np.ones((64, 256), dtype=np.float32)
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [64, 256],
                            "data": rows.ravel().tolist()}]}
        return f"{base}/v2/models/soak-tensor/infer", "json", {}, body
    return (f"{base}/v1/chat/completions", "json", {}, {
        "model": "soak-llm", "max_tokens": 16,
        "messages": [{"role": "user", "content": "tell me about the sea"}]})


async def _drive(kind: str, server: StratusServer, client: httpx.AsyncClient, until: float,
                 outcomes: Counter[str], pending: set[asyncio.Task[None]]) -> None:
    url, _, headers, body = _request(kind, server)
    payload = json.dumps(body).encode()
    interval = 1.0 / RATES[kind]

    async def one() -> None:
        try:
            response = await client.post(url, content=payload, headers={
                **server.auth_headers(), "content-type": "application/json", **headers})
            outcomes[f"{kind} {response.status_code}"] += 1
        except httpx.HTTPError as exc:
            outcomes[f"{kind} {type(exc).__name__}"] += 1

    due = time.monotonic()
    while due < until:
        task = asyncio.create_task(one())
        pending.add(task)
        task.add_done_callback(pending.discard)
        due += interval
        await asyncio.sleep(max(0.0, due - time.monotonic()))


async def _revisions(server: StratusServer, until: float, events: list[str]) -> None:
    """A new echo revision every minute, rolled back half a minute later (the CLI, as a user)."""
    version = 1
    while time.monotonic() + REVISION_EVERY_S < until:
        await asyncio.sleep(REVISION_EVERY_S / 2)
        version += 1
        await asyncio.to_thread(server.deploy, "soak.py", "Echo", "soak-echo",
                                ["--config", json.dumps({"version": str(version)})])
        events.append(f"deployed revision {version}")
        await asyncio.sleep(REVISION_EVERY_S / 2)
        await asyncio.to_thread(server.cli, ["rollback", "soak-echo"])
        events.append(f"rolled back from revision {version}")


async def _sampling(server: StratusServer, began: float, until: float,
                    samples: list[Sample]) -> None:
    while time.monotonic() < until:
        samples.append(take(server.pid, server.data_dir, time.monotonic() - began))
        await asyncio.sleep(SAMPLE_S)
    samples.append(take(server.pid, server.data_dir, time.monotonic() - began))


async def _run(server: StratusServer, duration: float) -> tuple[list[Sample], Counter[str], list[str]]:
    samples: list[Sample] = []
    outcomes: Counter[str] = Counter()
    events: list[str] = []
    pending: set[asyncio.Task[None]] = set()
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=30.0, limits=limits) as client:
        began = time.monotonic()
        until = began + duration
        await asyncio.gather(
            *(_drive(kind, server, client, until, outcomes, pending) for kind in RATES),
            _revisions(server, until, events), _sampling(server, began, until, samples))
        if pending:
            await asyncio.wait(pending, timeout=60)
    return samples, outcomes, events


def _deploy_all(server: StratusServer, model_dir: Path) -> None:
    common = ["--min-replicas", "1", "--max-replicas", "2"]
    server.deploy("soak.py", "Echo", "soak-echo", common)
    server.deploy("soak.py", "Counter", "soak-stream", common)
    server.deploy("soak.py", "RowSum", "soak-tensor", common)
    server.push_model("soak-gpt", build_tiny_gpt2(model_dir), "1.0.0")
    server.cli(["deploy", "--llm", "soak-gpt@1.0.0", "--name", "soak-llm", "--min-replicas", "1",
                "--max-replicas", "1", "--config", json.dumps({"max_num_seqs": 4})])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of workload")
    parser.add_argument("--json", action="store_true", help="print the JSON result on stdout")
    args = parser.parse_args()
    started = timestamp()
    server = StratusServer("stratus-soak")
    server.start()
    try:
        _deploy_all(server, RESULTS_DIR / "soak-model")
        for name in ("soak-echo", "soak-stream", "soak-tensor", "soak-llm"):
            server.wait_for_replicas(name, has_ready_replica, timeout=120)
        log(f"soak: {args.duration:.0f} s of mixed load")
        samples, outcomes, events = asyncio.run(_run(server, args.duration))
    finally:
        server.stop()
    steady = [s for s in samples if s.at_s >= WARMUP_S] or samples
    rows = [[name, samples[0].values[name], steady[0].values[name], samples[-1].values[name],
             max(s.values[name] for s in samples), slope_per_hour(steady, name)]
            for name in SERIES]
    table = markdown_table(["series", "start", "after warm-up", "end", "peak",
                            "slope per hour (after warm-up)"], rows)
    failed = {k: v for k, v in outcomes.items() if not k.endswith(" 200")}
    table += "\n\nrequests: " + ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items()))
    table += f"\nfailed: {sum(failed.values())} ({failed or 'none'}); revisions: {len(events)} events"
    payload = {"benchmark": "soak", "started": started, "machine": machine_info(),
               "config": {"duration_s": args.duration, "rates": RATES, "sample_s": SAMPLE_S,
                          "warmup_s": WARMUP_S},
               "samples": [{"at_s": s.at_s, **s.values} for s in samples],
               "outcomes": dict(outcomes), "events": events,
               "slopes_per_hour": {name: slope_per_hour(steady, name) for name in SERIES}}
    publish("soak", payload, table, args.json)


if __name__ == "__main__":
    main()
