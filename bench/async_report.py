"""The markdown table of ``bench/async.py``: one row per measurement, Stratus beside each Celery
pool, with the ratio Stratus / Celery (above 1 is better for rates, below 1 for times)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common import markdown_table

# (label, section, key): each figure's place in a target's results.
ROWS = (
    ("(a) enqueue, accepted/s", "throughput", "enqueue_per_s"),
    ("(b) end-to-end no-op, tasks/s (goal >= 3x Celery)", "throughput", "e2e_per_s"),
    ("(c) idle send -> handler start p50, ms (goal <= 5)", "latency", "to_start_p50_ms"),
    ("(c) idle send -> handler start p95, ms", "latency", "to_start_p95_ms"),
    ("(c) idle send -> result seen p50, ms", "latency", "to_result_p50_ms"),
    ("(d) from zero: send -> result, median s", "cold", "to_result_median_s"),
    ("(d) from zero: send -> handler start, median s", "cold", "to_handler_start_median_s"),
    ("(e) workflow of 5 no-op steps (?wait=true) p50, ms", "workflow", "workflow_p50_ms"),
    ("(e) 5 sequential sync invokes p50, ms", "workflow", "five_invokes_p50_ms"),
    ("(e) workflow, added ms per step p50 (goal <= 2)", "workflow", "per_step_added_p50_ms"),
)


def figure(result: Mapping[str, Any] | None, section: str, key: str) -> float | None:
    value = ((result or {}).get(section) or {}).get(key)
    return float(value) if isinstance(value, int | float) else None


def ratio(ours: float | None, theirs: float | None) -> str | None:
    return f"{ours / theirs:.2f}x" if ours is not None and theirs else None


def render(results: Mapping[str, Mapping[str, Any]], sync: Mapping[str, Any],
           failures: Mapping[str, str]) -> str:
    """Every system's figure, then Stratus (each queue backend) over each Celery pool."""
    ours = [name for name in results if name.startswith("stratus")]
    peers = [name for name in results if not name.startswith("stratus")]
    pairs = [(a, b) for a in ours for b in peers]
    headers = ["measurement", *results, *(f"{a} / {b}" for a, b in pairs)]
    rows = []
    for label, section, key in ROWS:
        values = {name: figure(result, section, key) for name, result in results.items()}
        rows.append([label, *values.values(), *(ratio(values[a], values[b]) for a, b in pairs)])
    lines = [markdown_table(headers, rows)]
    for name in ours:
        path = (results[name].get("latency") or {}).get("path_p50_ms") or {}
        if "to_claimed" in path:
            steps = ", ".join(f"{key.removeprefix('to_')} {value:.2f}" for key, value in path.items())
            lines.append(f"- (c) {name}, idle path, p50 ms from the client's send: {steps}")
        todo = (results[name].get("workflow") or {}).get("todo")
        if todo:
            lines.append(f"- (e) TODO ({name}): {todo}")
    if sync:
        lines += ["", f"(f) sync no-op, bench/noop.py --only stratus, {sync['duration_s']:g}s per level, "
                  f"best of {sync['repeats']} alternating runs:", sync_table(sync)]
    lines += [f"- {name} FAILED: {error.splitlines()[0]}" for name, error in failures.items()]
    return "\n".join(lines)


def sync_table(sync: Mapping[str, Any]) -> str:
    after = {r["concurrency"]: r for r in sync["after"]}
    rows = []
    for before in sync["before"]:
        now = after.get(before["concurrency"], {})
        rows.append([before["concurrency"], before["requests_per_sec"], now.get("requests_per_sec"),
                     ratio(now.get("requests_per_sec"), before["requests_per_sec"]),
                     before["p50_ms"], now.get("p50_ms"), before["p99_ms"], now.get("p99_ms")])
    headers = ["c", f"req/s before ({sync['before_commit'][:7]})", "req/s after", "after/before",
               "p50 ms before", "p50 ms after", "p99 ms before", "p99 ms after"]
    return markdown_table(headers, rows)
