"""Workflow overhead (issue 16): a 5-step sequential workflow of no-op steps, run with
``?wait=true``, against 5 sequential sync invokes of the same deployment, interleaved.

The per-step added latency of one pair is (workflow - 5 invokes) / 5; the figure is its p50.
API: ``POST /api/workflows`` (YAML) and ``POST /api/workflows/{name}/executions?wait=true``.
A server without ``/api/workflows`` gets a marked TODO instead of a figure.
"""

from __future__ import annotations

import argparse
import http.client
import json
import time
from typing import Any

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


class KeepAlive:
    """One persistent HTTP/1.1 connection (stdlib): the client's cost per request is tiny and
    the same for both sides, since the 5 invokes make 4 more requests than the workflow."""

    def __init__(self, server: StratusServer) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=90.0)
        self.headers = {**server.auth_headers(), "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: bytes | None = None,
             content_type: str | None = None) -> tuple[int, bytes]:
        headers = {**self.headers, **({"Content-Type": content_type} if content_type else {})}
        self.conn.request(method, path, body=body, headers=headers)
        resp = self.conn.getresponse()
        return resp.status, resp.read()

    def close(self) -> None:
        self.conn.close()


def timed_workflow(http: KeepAlive) -> float:
    began = time.perf_counter()
    status, body = http.call("POST", f"/api/workflows/{NAME}/executions?wait=true&timeout_s=60", BODY)
    elapsed = time.perf_counter() - began
    if status != 200 or json.loads(body).get("status") != "succeeded":
        raise RuntimeError(f"workflow run -> {status} {body[:400]!r}")
    return elapsed


def timed_invokes(http: KeepAlive, deployment: str) -> float:
    began = time.perf_counter()
    for _ in range(STEPS):
        status, body = http.call("POST", f"/api/deployments/{deployment}/invoke", BODY)
        if status != 200:
            raise RuntimeError(f"sync invoke -> {status} {body[:300]!r}")
    return time.perf_counter() - began


def workflow_overhead(server: StratusServer, deployment: str, args: argparse.Namespace) -> dict[str, Any]:
    http = KeepAlive(server)
    try:
        if http.call("GET", "/api/workflows")[0] == 404:
            log("workflow overhead: TODO, no /api/workflows on this server")
            return {"todo": "workflows API (POST /api/workflows) not on this tree: not measured"}
        status, body = http.call("POST", "/api/workflows", definition(deployment).encode(),
                                 "application/yaml")
        if status not in (200, 201):
            raise RuntimeError(f"POST /api/workflows -> {status} {body[:400]!r}")
        for _ in range(3):  # warm: the workflow's first run, connections, the replica
            timed_workflow(http)
            timed_invokes(http, deployment)
        flows: list[float] = []
        chains: list[float] = []
        for _ in range(args.workflow_n):  # interleaved, so load drift hits both alike
            flows.append(timed_workflow(http))
            chains.append(timed_invokes(http, deployment))
    finally:
        http.close()
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
