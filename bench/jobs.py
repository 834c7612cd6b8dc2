"""Jobs: start latency, Stratus vs Ray Jobs 2.60, and the event log's projection rebuild.

    .venv/bin/python bench/jobs.py [--runs 20] [--only stratus,ray-sdk,ray-cli,rebuild] [--json]

(1) Job start: from the client's ``time.time()`` just before the submission to the first line
of user code, which writes ``time.time()`` to a stamp file (``bench/handlers/jobs/first_line.py``,
the same file for both systems). One job at a time, each waited for until it ends, after
``--warmup`` untimed runs. Stratus: ``POST /api/jobs`` (the code bundle uploaded once before),
``train(ctx)``'s first line. Ray: a private one-node cluster (``ray start --head`` from
``bench/.venv-ray``, made by ``bench/setup_ray_venv.sh``), the script run as the job's
entrypoint (``python first_line.py STAMP``, its first line), submitted with the SDK's
``JobSubmissionClient.submit_job`` (ray-sdk) and with the ``ray job submit --no-wait`` CLI
(ray-cli, whose figure includes the CLI's own start-up). The systems run one after the other,
never at once. (2) ``JobLog.rebuild()`` of a log of ``--rebuild-events`` events on SQLite and
PostgreSQL (``bench/jobs_rebuild.py``), with ``JobLog.append``'s rate.

Results go to ``bench/results/jobs-<timestamp>.json``; markdown tables are printed (to stderr
with ``--json``, which prints the JSON document on stdout instead).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import log, machine_info, markdown_table, parse_only, percentile, publish, timestamp
from jobs_ray import RayCluster
from jobs_rebuild import bench_rebuild
from jobs_stratus import JOB_DIR, bench_stratus
from ray_target import ensure_ray_venv

TARGETS = ("stratus", "ray-sdk", "ray-cli", "rebuild")
START_TARGETS = TARGETS[:3]
GOAL = 20.0  # issue 17: job start at least 20x faster than Ray Jobs
CONFIG_KEYS = ("runs", "warmup", "gap", "timeout", "ray_cpus", "rebuild_events",
               "events_per_job", "rebuild_repeats", "rebuild_backends", "append_n", "quick")


def summarize(name: str, result: dict[str, Any]) -> dict[str, Any]:
    timed = [s for s in result["samples"] if not s["warmup"]]
    firsts = [s["to_first_line_s"] * 1000 for s in timed]
    returned = [s.get("submit_returned_s") or s.get("cli_exit_s") for s in timed]
    summary = {
        "system": name, "runs": len(timed),
        "p50_ms": percentile(firsts, 50), "p95_ms": percentile(firsts, 95),
        "min_ms": min(firsts), "max_ms": max(firsts), "mean_ms": sum(firsts) / len(firsts),
        "submit_returned_p50_ms": percentile([r * 1000 for r in returned if r is not None], 50),
        "to_end_p50_ms": percentile([s["to_end_s"] * 1000 for s in timed], 50),
        "warmup_ms": [s["to_first_line_s"] * 1000 for s in result["samples"] if s["warmup"]],
        "samples": result["samples"],
    }
    return summary | {k: v for k, v in result.items() if k not in ("samples", "mode")}


def bench_ray(modes: list[str], stamp_dir: Path, args: argparse.Namespace,
              failures: dict[str, str]) -> list[dict[str, Any]]:
    ensure_ray_venv()
    cluster = RayCluster(args.ray_cpus)
    summaries = []
    try:
        cluster.start()
        for mode in modes:
            try:
                result = cluster.submit_runs(mode, JOB_DIR / "first_line.py", stamp_dir,
                                             args.runs, args.warmup, args.gap, args.timeout)
                summaries.append(summarize(f"ray-{mode}", result))
            except Exception as exc:  # the other mode may still run
                log(f"ray-{mode} FAILED: {exc}")
                failures[f"ray-{mode}"] = f"{type(exc).__name__}: {exc}"
    finally:
        cluster.stop()
    return summaries


def ratios(starts: list[dict[str, Any]]) -> dict[str, float]:
    by_name = {s["system"]: s for s in starts}
    out = {}
    if "stratus" in by_name:
        for peer in ("ray-sdk", "ray-cli"):
            if peer in by_name:
                out[f"{peer}_over_stratus_p50"] = by_name[peer]["p50_ms"] / by_name["stratus"]["p50_ms"]
                out[f"{peer}_over_stratus_p95"] = by_name[peer]["p95_ms"] / by_name["stratus"]["p95_ms"]
    return out


def render(starts: list[dict[str, Any]], rebuilds: list[dict[str, Any]],
           found: dict[str, float], failures: dict[str, str]) -> str:
    lines = []
    if starts:
        rows = [[s["system"], s["runs"], s["p50_ms"], s["p95_ms"], s["min_ms"], s["max_ms"],
                 s["submit_returned_p50_ms"], s["to_end_p50_ms"]] for s in starts]
        lines += ["Job start: submission to the first line of user code",
                  markdown_table(["system", "runs", "p50 ms", "p95 ms", "min ms", "max ms",
                                  "submit returned p50 ms", "job ended p50 ms"], rows)]
    for peer, label in (("ray-sdk", "Ray Jobs (SDK submit_job)"), ("ray-cli", "ray job submit (CLI)")):
        if f"{peer}_over_stratus_p50" in found:
            ratio = found[f"{peer}_over_stratus_p50"]
            verdict = "met" if ratio >= GOAL else "NOT met"
            lines.append(f"\n{label} p50 / Stratus p50 = {ratio:.1f}x (p95: "
                         f"{found[f'{peer}_over_stratus_p95']:.1f}x; goal >= {GOAL:g}x: {verdict})")
    if rebuilds:
        lines.append("\nEvent log: JobLog.rebuild() of the projections")
        rows = [[r["backend"], f"{r['events']:,}", f"{r['jobs']:,}", r["rebuild_best_s"],
                 r["rebuild_median_s"], f"{r['events_per_s']:,.0f}", r.get("append_ms_per_event")]
                for r in rebuilds]
        lines.append(markdown_table(["backend", "events", "jobs", "rebuild best s",
                                     "rebuild median s", "events/s", "append ms/event"], rows))
    lines += [f"- {name} FAILED: {error.splitlines()[0]}" for name, error in failures.items()]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="timed job starts per system")
    parser.add_argument("--warmup", type=int, default=2, help="untimed job starts first")
    parser.add_argument("--gap", type=float, default=0.2, help="idle seconds before each start")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per job")
    parser.add_argument("--ray-cpus", type=int, default=len(os.sched_getaffinity(0)),
                        help="--num-cpus of the Ray cluster")
    parser.add_argument("--rebuild-events", type=int, default=100_000)
    parser.add_argument("--events-per-job", type=int, default=100)
    parser.add_argument("--rebuild-repeats", type=int, default=3)
    parser.add_argument("--rebuild-backends", default="sqlite,postgres")
    parser.add_argument("--append-n", type=int, default=2000, help="appends timed one by one")
    parser.add_argument("--quick", action="store_true", help="small N everywhere (smoke run)")
    parser.add_argument("--only", default=",".join(TARGETS), help="subset of " + ",".join(TARGETS))
    parser.add_argument("--json", action="store_true", help="print the JSON result on stdout")
    args = parser.parse_args()
    args.targets = parse_only(args.only, TARGETS)
    args.rebuild_backends = parse_only(args.rebuild_backends, ("sqlite", "postgres"))
    if args.quick:
        args.runs, args.warmup, args.rebuild_events, args.rebuild_repeats, args.append_n = \
            5, 1, 10_000, 1, 200
    return args


def main() -> int:
    args = parse_args()
    started = timestamp()
    failures: dict[str, str] = {}
    starts: list[dict[str, Any]] = []
    rebuilds: list[dict[str, Any]] = []
    # The jobs may run as another user (a root server runs them as the namespace's): any may write.
    stamp_dir = Path(tempfile.mkdtemp(prefix="stratus-bench-jobs-"))
    stamp_dir.chmod(0o1777)
    try:
        if "stratus" in args.targets:
            try:
                starts.append(summarize("stratus", bench_stratus(
                    stamp_dir, args.runs, args.warmup, args.gap, args.timeout)))
            except Exception as exc:  # one broken target must not hide the others' numbers
                log(f"stratus FAILED: {exc}")
                failures["stratus"] = f"{type(exc).__name__}: {exc}"
        modes = [t.removeprefix("ray-") for t in args.targets if t.startswith("ray-")]
        if modes:
            starts += bench_ray(modes, stamp_dir, args, failures)
    finally:
        shutil.rmtree(stamp_dir, ignore_errors=True)
    if "rebuild" in args.targets:
        for backend in args.rebuild_backends:
            try:
                rebuilds.append(bench_rebuild(backend, args.rebuild_events, args.events_per_job,
                                              args.rebuild_repeats, args.append_n))
            except Exception as exc:
                log(f"rebuild/{backend} FAILED: {exc}")
                failures[f"rebuild-{backend}"] = f"{type(exc).__name__}: {exc}"
    found = ratios(starts)
    payload = {"benchmark": "jobs", "started": started, "machine": machine_info(),
               "config": {k: getattr(args, k) for k in CONFIG_KEYS} | {"targets": args.targets},
               "job_start": starts, "ratios": found, "goal_ratio": GOAL, "rebuild": rebuilds,
               "failures": failures}
    publish("jobs", payload, render(starts, rebuilds, found, failures), args.json)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
