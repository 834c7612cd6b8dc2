"""Workflow overhead: what a sequential task step adds, on a real server with a no-op handler.

    .venv/bin/python bench/workflow_steps.py [--runs 300] [--steps 5]

Three kinds of call, after a warm-up, interleaved (one of each per round, so a busy machine
weighs on all three alike) over one keep-alive connection: ``direct``, a no-op invoke;
``empty``, a workflow of one ``succeed`` step run with ``?wait=true`` (the HTTP call, the
execution's start and end records); ``tasks``, a workflow of ``--steps`` no-op tasks run the
same way. The cost of a step is ``(tasks - empty) / steps`` at p50: the in-process call of the
handler and the step's history record. ``between_steps`` is read from the executions'
histories: from one step's end to the next one's start (recording the step, deciding the
next), the engine's own share. Prints JSON, and keeps it in
``bench/results/workflow-steps-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import httpx

from common import log, machine_info, percentile, write_results
from stratus_target import StratusServer, has_ready_replica


def _call(client: httpx.Client, url: str, body: bytes) -> tuple[float, Any]:
    started = time.perf_counter()
    response = client.post(url, content=body, headers={"content-type": "application/json"})
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"{url}: {response.status_code} {response.text[:300]}")
    return elapsed * 1000, response.json()


def _gaps(execution: dict[str, Any]) -> list[float]:
    steps = execution["steps"]
    return [(steps[i + 1]["started_at"] - steps[i]["finished_at"]) * 1000
            for i in range(len(steps) - 1)]


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
            times: dict[str, list[float]] = {name: [] for name in urls}
            gaps: list[float] = []
            log(f"{args.runs} rounds after 30 of warm-up")
            for round_number in range(30 + args.runs):
                for name, url in urls.items():
                    elapsed, answer = _call(client, url, body)
                    if round_number >= 30:
                        times[name].append(elapsed)
                        if name == "tasks":
                            gaps += _gaps(answer)
        results = {name: _stats(values) for name, values in times.items()}
        per_step = (results["tasks"]["p50_ms"] - results["empty"]["p50_ms"]) / args.steps
        document = {"steps": args.steps, "runs": args.runs, **results,
                    "per_step_p50_ms": round(per_step, 3),
                    "between_steps_p50_ms": round(percentile(gaps, 50), 3),
                    "goal_per_step_p50_ms": 2.0, "machine": machine_info()}
        log(f"results in {write_results('workflow-steps', document)}")
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
