"""Workflow overhead: what a sequential task step adds, on a real server with a no-op handler.

    .venv/bin/python bench/workflow_steps.py [--runs 300] [--steps 5]

Three sequential series, after a warm-up, each over one keep-alive connection:
``direct``, a no-op invoke; ``empty``, a workflow of one ``succeed`` step run with
``?wait=true`` (the HTTP call, the execution's start and end records); ``tasks``, a workflow of
``--steps`` no-op tasks run the same way. The cost of a step is ``(tasks - empty) / steps`` at
p50: it holds the in-process call of the handler and the step's history record. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import httpx

from common import log, percentile
from stratus_target import StratusServer, has_ready_replica


def _series(client: httpx.Client, url: str, body: bytes, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.post(url, content=body, headers={"content-type": "application/json"})
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"{url}: {response.status_code} {response.text[:300]}")
        times.append(elapsed * 1000)
    return times


def _stats(times: list[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(times, 50), 3), "p90_ms": round(percentile(times, 90), 3),
            "p99_ms": round(percentile(times, 99), 3), "mean_ms": round(statistics.mean(times), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    server = StratusServer("stratus-workflows")
    server.start()
    try:
        server.deploy("noop.py", "NoOp", "noop", ["--min-replicas", "1"])
        server.wait_for_replicas("noop", has_ready_replica)
        tasks = "\n".join(f"  - {{id: s{i}, type: task, deployment: noop}}"
                          for i in range(args.steps))
        headers = {**server.auth_headers(), "content-type": "application/yaml"}
        with httpx.Client(base_url=server.base_url, headers=server.auth_headers(),
                          timeout=30) as client:
            for text in (f"name: wf-tasks\nsteps:\n{tasks}\n",
                         "name: wf-empty\nsteps:\n  - {id: done, type: succeed}\n"):
                response = client.post("/api/workflows", content=text, headers=headers)
                assert response.status_code in (200, 201), response.text
            body = b'{"x": 1}'
            urls = {"direct": "/api/deployments/noop/invoke",
                    "empty": "/api/workflows/wf-empty/executions?wait=true",
                    "tasks": "/api/workflows/wf-tasks/executions?wait=true"}
            for url in urls.values():
                _series(client, url, body, 30)  # warm-up
            results = {}
            for name, url in urls.items():
                log(f"{name}: {args.runs} runs")
                results[name] = _stats(_series(client, url, body, args.runs))
        per_step = (results["tasks"]["p50_ms"] - results["empty"]["p50_ms"]) / args.steps
        document = {"steps": args.steps, "runs": args.runs, **results,
                    "per_step_p50_ms": round(per_step, 3), "goal_per_step_p50_ms": 2.0}
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
