"""The sync no-op figures of ``bench/noop.py --only stratus`` for an older commit and for now.

The older tree is exported with ``git archive`` into a temporary directory and put first on
``PYTHONPATH``, so the same venv and the same ``stratus`` entry point serve both runs.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from common import BENCH_DIR, REPO_ROOT, log


def export_tree(ref: str, into: Path) -> str:
    """Write ``src/`` of ``ref`` under ``into``; returns the full commit id."""
    commit = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", f"{ref}^{{commit}}"],
                            check=True, capture_output=True, text=True).stdout.strip()
    archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", commit, "src"],
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return commit


def run_noop(src: Path, duration: float) -> list[dict[str, Any]]:
    """``bench/noop.py --only stratus --json`` with ``src`` first on the path: its result rows."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, str(BENCH_DIR / "noop.py"), "--only", "stratus", "--json",
           "--duration", str(duration)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"noop.py with {src} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return list(json.loads(done.stdout)["results"])


KEYS = ("concurrency", "requests_per_sec", "p50_ms", "p99_ms", "non_2xx")


def best(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per concurrency, the run with the most req/s: other load on a shared machine only
    ever slows a run down, so the best one is the least disturbed."""
    by_level: dict[int, dict[str, Any]] = {}
    for rows in runs:
        for row in rows:
            kept = by_level.get(row["concurrency"])
            if kept is None or row["requests_per_sec"] > kept["requests_per_sec"]:
                by_level[row["concurrency"]] = {k: row[k] for k in KEYS}
    return [by_level[c] for c in sorted(by_level)]


def sync_before_after(ref: str, duration: float, repeats: int) -> dict[str, Any]:
    """Run the sync no-op bench on ``ref``'s tree and on this tree, alternating ``repeats``
    times so a drift in the machine's load hits both alike."""
    before: list[list[dict[str, Any]]] = []
    after: list[list[dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="stratus-before-") as tmp:
        commit = export_tree(ref, Path(tmp))
        for i in range(repeats):
            log(f"sync no-op {i + 1}/{repeats}: before ({commit[:10]})")
            before.append(run_noop(Path(tmp) / "src", duration))
            log(f"sync no-op {i + 1}/{repeats}: after (this tree)")
            after.append(run_noop(REPO_ROOT / "src", duration))
    return {"before_commit": commit, "duration_s": duration, "repeats": repeats,
            "before": best(before), "after": best(after),
            "runs": {"before": before, "after": after}}
