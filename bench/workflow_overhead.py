"""Workflow overhead (issue 16): a 5-step sequential workflow of no-op steps, run with
``?wait=true``, against 5 sequential sync invokes of the same deployment, interleaved.

The per-step added latency of one pair is (workflow - 5 invokes) / 5; the figure is its p50.
API: ``POST /api/workflows`` (YAML) and ``POST /api/workflows/{name}/executions?wait=true``.
A server without ``/api/workflows`` gets a marked TODO instead of a figure.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import httpx

from common import log, percentile
from stratus_target import StratusServer

STEPS = 5
NAME = "bench-noop-chain"
BODY = b'{"x": 1}'


def definition(deployment: str) -> str:
    """YAML: five task steps, each calling ``deployment`` with the execution's input."""
    steps = "".join(f"  - id: s{i}\n    type: task\n    deployment: {deployment}\n"
                    for i in range(STEPS))
    return f"name: {NAME}\nsteps:\n{steps}"


def timed_workflow(http: httpx.Client) -> float:
    began = time.perf_counter()
    resp = http.post(f"/api/workflows/{NAME}/executions", params={"wait": "true", "timeout_s": 60},
                     content=BODY)
    elapsed = time.perf_counter() - began
    if resp.status_code != 200 or resp.json().get("status") != "succeeded":
        raise RuntimeError(f"workflow run -> {resp.status_code} {resp.text[:400]}")
    return elapsed


def timed_invokes(http: httpx.Client, deployment: str) -> float:
    began = time.perf_counter()
    for _ in range(STEPS):
        resp = http.post(f"/api/deployments/{deployment}/invoke", content=BODY)
        if resp.status_code != 200:
            raise RuntimeError(f"sync invoke -> {resp.status_code} {resp.text[:300]}")
    return time.perf_counter() - began


def workflow_overhead(server: StratusServer, deployment: str, args: argparse.Namespace) -> dict[str, Any]:
    headers = {**server.auth_headers(), "Content-Type": "application/json"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=90.0) as http:
        if http.get("/api/workflows").status_code == 404:
            log("workflow overhead: TODO, no /api/workflows on this server")
            return {"todo": "workflows API (POST /api/workflows) not on this tree: not measured"}
        resp = http.post("/api/workflows", content=definition(deployment).encode(),
                         headers={"Content-Type": "application/yaml"})
        if resp.status_code not in (200, 201):
            raise RuntimeError(f"POST /api/workflows -> {resp.status_code} {resp.text[:400]}")
        for _ in range(3):  # warm: the workflow's first run, connections, the replica
            timed_workflow(http)
            timed_invokes(http, deployment)
        flows: list[float] = []
        chains: list[float] = []
        for _ in range(args.workflow_n):  # interleaved, so load drift hits both alike
            flows.append(timed_workflow(http))
            chains.append(timed_invokes(http, deployment))
    added = [(w - s) * 1000 / STEPS for w, s in zip(flows, chains, strict=True)]
    out = {"runs": args.workflow_n, "steps": STEPS,
           "workflow_p50_ms": percentile(flows, 50) * 1000,
           "workflow_p95_ms": percentile(flows, 95) * 1000,
           "five_invokes_p50_ms": percentile(chains, 50) * 1000,
           "five_invokes_p95_ms": percentile(chains, 95) * 1000,
           "per_step_added_p50_ms": percentile(added, 50),
           "per_step_added_p95_ms": percentile(added, 95)}
    log(f"workflow: {out['workflow_p50_ms']:.2f} ms p50 vs 5 invokes {out['five_invokes_p50_ms']:.2f} ms: "
        f"{out['per_step_added_p50_ms']:+.2f} ms per step")
    return out
