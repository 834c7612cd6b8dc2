"""The performance budget: a quick run of the no-op and cold-start benchmarks, Stratus alone,
checked against bench/current_figures.json, to check a change to the request path in one command.

    .venv/bin/python bench/budget.py [--tolerance 0.15] [--only noop|coldstart] [--json]
    (or: make bench-budget)

What it runs, in about two minutes (it says how long it took): bench/noop.py's Stratus target
(one replica of the no-op) under wrk at 1 and 32 connections, ``--duration`` s each after
``--warmup`` s at the same level; and bench/coldstart.py's Stratus target (the torch handler,
torch preloaded, the sandbox as the server configures it by default), ``--runs`` timed cold
starts after one untimed one. Both go through those scripts' own functions, so they measure
what `make bench-noop` and `make bench-coldstart` measure, only shorter.

The machine is shared and noisy, so each benchmark runs ``--rounds`` (2) rounds on the same
server and each figure keeps its better round (throughput the higher, latency the lower): a
neighbour's burst slows a round far more often than anything speeds one up. The 1-minute load
average is printed at the start, before each round and at the end: read a verdict against it.

Each figure is compared with its row of bench/current_figures.json (the Stratus value of the
latest recorded run; docs/benchmarks.md, "Current figures"). A figure more than
``--tolerance`` (0.15) worse, throughput lower or latency higher, is WORSE and makes the exit
status 1; one as much better is "better" (time to record a new run); a benchmark that fails to
run makes the status 2. A row recorded on another CPU model than this machine's is flagged:
absolute figures do not carry across machines (ratios against a peer do). Not part of
`make test`: timings in tests are noise. Results also go to bench/results/budget-<time>.json.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from coldstart import stratus_target, time_one
from common import log, machine_info, markdown_table, percentile, publish, timestamp
from current_figures import Better, Figures, load
from noop import measure, stratus_endpoint

BENCHES = ("noop", "coldstart")


@dataclass(frozen=True)
class Budget:
    """A figure this script measures, and the row of bench/current_figures.json it is held to."""

    name: str
    row_id: str
    bench: str


BUDGETS = (
    Budget("no-op req/s, 32 connections", "noop-c32-rps-starlette", "noop"),
    Budget("no-op p50 ms, 1 connection", "noop-c1-p50-starlette", "noop"),
    Budget("no-op p99 ms, 1 connection", "noop-c1-p99", "noop"),
    Budget("cold start median ms", "coldstart-median-ray", "coldstart"),
    Budget("cold start p90 ms", "coldstart-p90", "coldstart"),
)


@dataclass(frozen=True)
class Verdict:
    name: str
    current: float
    now: float
    better: Better
    change: float  # (now - current) / current, signed
    worse_by: float  # the change in the bad direction: > 0 is worse
    verdict: str  # "ok", "better" or "WORSE"


# --------------------------------------------------------------------------- pure rules


def best(values: Sequence[float], better: Better) -> float:
    """The better of the rounds: the highest throughput, the lowest latency."""
    if not values:
        raise ValueError("no round measured")
    return max(values) if better == "higher" else min(values)


def judge(name: str, current: float, now: float, better: Better, tolerance: float) -> Verdict:
    """``now`` against the recorded ``current``: WORSE past ``tolerance`` in the bad direction
    (throughput lower, latency higher), "better" past it in the good one, else "ok"."""
    if current <= 0:
        raise ValueError(f"{name}: a recorded figure of {current} cannot be a budget")
    change = (now - current) / current
    worse_by = -change if better == "higher" else change
    verdict = "WORSE" if worse_by > tolerance else "better" if worse_by < -tolerance else "ok"
    return Verdict(name, current, now, better, change, worse_by, verdict)


def same_cpu(recorded: str, cpu_model: str | None) -> bool:
    """Whether the machine a row names ("Intel Xeon", "AMD EPYC") is this CPU model."""
    words = set(re.findall(r"[a-z0-9]+", (cpu_model or "").lower()))
    wanted = re.findall(r"[a-z0-9]+", recorded.lower())
    return bool(wanted) and all(word in words for word in wanted)


def exit_status(verdicts: Sequence[Verdict], failures: dict[str, str]) -> int:
    if failures:
        return 2
    return 1 if any(v.verdict == "WORSE" for v in verdicts) else 0


# --------------------------------------------------------------------------- measuring


def load_average() -> float:
    return os.getloadavg()[0]


def noted_load(moment: str, loads: list[dict[str, Any]]) -> None:
    load1 = load_average()
    loads.append({"moment": moment, "load1": load1})
    log(f"load average (1 min) {load1:.2f}: {moment}")


def noop_rounds(args: argparse.Namespace, loads: list[dict[str, Any]]) -> dict[str, list[float]]:
    """bench/noop.py's Stratus target, ``args.rounds`` rounds of c=1 and c=32 on one server."""
    settings = argparse.Namespace(concurrency=[1, 32], warmup=args.warmup,
                                  duration=args.duration, threads=1)
    samples: dict[str, list[float]] = {"noop-c32-rps-starlette": [], "noop-c1-p50-starlette": [],
                                       "noop-c1-p99": []}
    with stratus_endpoint() as endpoint:
        for i in range(args.rounds):
            noted_load(f"no-op round {i + 1}", loads)
            rows = {row["concurrency"]: row for row in measure("stratus", endpoint, settings)}
            for row in rows.values():
                if row["non_2xx"] or any(row["socket_errors"].values()):
                    raise RuntimeError(f"c={row['concurrency']}: {row['non_2xx']} non-2xx, "
                                       f"socket errors {row['socket_errors']}: not a measurement")
            samples["noop-c32-rps-starlette"].append(rows[32]["requests_per_sec"])
            samples["noop-c1-p50-starlette"].append(rows[1]["p50_ms"])
            samples["noop-c1-p99"].append(rows[1]["p99_ms"])
    return samples


def coldstart_rounds(args: argparse.Namespace,
                     loads: list[dict[str, Any]]) -> dict[str, list[float]]:
    """bench/coldstart.py's Stratus target: one untimed cold start (the page cache), then
    ``args.rounds`` rounds of ``args.runs`` on one server; median and p90 per round."""
    settings = argparse.Namespace(settle=args.settle, jitter=args.jitter, timeout=180.0)
    samples: dict[str, list[float]] = {"coldstart-median-ray": [], "coldstart-p90": []}
    with stratus_target(preload=True) as target:
        log(f"cold start warm-up: {time_one(target, settings)['seconds'] * 1000:.1f} ms (discarded)")
        for i in range(args.rounds):
            noted_load(f"cold-start round {i + 1}", loads)
            runs = [time_one(target, settings) for _ in range(args.runs)]
            not_cold = sum(1 for run in runs if run["cold_header"] is False)
            if not_cold:
                raise RuntimeError(f"{not_cold} run(s) answered X-Stratus-Cold-Start: false")
            millis = [run["seconds"] * 1000 for run in runs]
            log(f"cold starts, round {i + 1}: " + ", ".join(f"{ms:.1f}" for ms in millis) + " ms")
            samples["coldstart-median-ray"].append(percentile(millis, 50))
            samples["coldstart-p90"].append(percentile(millis, 90))
    return samples


RUNNERS: dict[str, Callable[[argparse.Namespace, list[dict[str, Any]]], dict[str, list[float]]]] = {
    "noop": noop_rounds,
    "coldstart": coldstart_rounds,
}


# --------------------------------------------------------------------------- report


def short(value: float) -> str:
    """A round's figure as the table shows it: 2,079 or 65.6 or 0.646."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def render(verdicts: Sequence[Verdict], rounds: dict[str, list[float]], figures: Figures,
           cpu_model: str | None, loads: Sequence[dict[str, Any]], elapsed_s: float,
           failures: dict[str, str], tolerance: float) -> str:
    by_name = {budget.name: budget for budget in BUDGETS}
    rows = []
    for v in verdicts:
        row = figures.row(by_name[v.name].row_id)
        rows.append([v.name, float(v.current), v.now, " / ".join(map(short, rounds[row.id])),
                     f"{v.change:+.1%}", v.verdict, f"{row.date}, {row.machine}"])
    table = markdown_table(["figure", "current", "now", "rounds", "change", "verdict",
                            "current recorded"], rows)
    lines = [table, "", f"tolerance {tolerance:.0%}; the better of the rounds counts; "
             f"this machine: {cpu_model}"]
    lines += [f"- {v.name}: recorded on {figures.row(by_name[v.name].row_id).machine}, not this "
              "CPU: compare ratios against a peer (docs/benchmarks.md), not this verdict"
              for v in verdicts
              if not same_cpu(figures.row(by_name[v.name].row_id).machine, cpu_model)]
    lines.append("load average (1 min): " + ", ".join(f"{x['moment']} {x['load1']:.2f}" for x in loads))
    late = " (more than the 3 minutes it should)" if elapsed_s > 180 else ""
    lines.append(f"took {elapsed_s:.0f} s{late}")
    lines += [f"- {name} FAILED: {error.splitlines()[0]}" for name, error in failures.items()]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--tolerance", type=float, default=0.15,
                        help="how much worse a figure may be, as a fraction (default 0.15)")
    parser.add_argument("--only", choices=BENCHES, help="run one benchmark (default: both)")
    parser.add_argument("--json", action="store_true", help="print the JSON result on stdout")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per benchmark; the better counts")
    parser.add_argument("--duration", type=float, default=3.0, help="no-op: seconds per level")
    parser.add_argument("--warmup", type=float, default=1.0, help="no-op: warm-up seconds per level")
    parser.add_argument("--runs", type=int, default=5, help="cold start: timed runs per round")
    parser.add_argument("--settle", type=float, default=1.0, help="cold start: idle s after zero")
    parser.add_argument("--jitter", type=float, default=1.0, help="cold start: random extra idle")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.runs < 1 or args.tolerance < 0:
        parser.error("--rounds and --runs must be at least 1, --tolerance not negative")
    return args


def main() -> int:
    args = parse_args()
    figures = load()
    started, clock = timestamp(), time.monotonic()
    benches = [args.only] if args.only else list(BENCHES)
    loads: list[dict[str, Any]] = []
    noted_load("start", loads)
    rounds: dict[str, list[float]] = {}
    failures: dict[str, str] = {}
    for bench in benches:
        try:
            rounds |= RUNNERS[bench](args, loads)
        except Exception as exc:  # a broken benchmark must not hide the other's figures
            log(f"{bench} FAILED: {exc}")
            failures[bench] = f"{type(exc).__name__}: {exc}"
    noted_load("end", loads)
    verdicts = []
    for budget in BUDGETS:
        if budget.row_id in rounds:
            row = figures.row(budget.row_id)
            now = best(rounds[budget.row_id], row.better)
            verdicts.append(judge(budget.name, row.value, now, row.better, args.tolerance))
    elapsed = time.monotonic() - clock
    machine = machine_info()
    payload = {
        "benchmark": "budget",
        "started": started,
        "machine": machine,
        "config": {key: getattr(args, key) for key in
                   ("tolerance", "rounds", "duration", "warmup", "runs", "settle", "jitter")}
        | {"benches": benches},
        "load_average": loads,
        "rounds": rounds,
        "verdicts": [asdict(v) | {"row": figures.row(b.row_id).id}
                     for v in verdicts for b in BUDGETS if b.name == v.name],
        "elapsed_s": elapsed,
        "failures": failures,
    }
    table = render(verdicts, rounds, figures, machine["cpu_model"], loads, elapsed, failures,
                   args.tolerance)
    publish("budget", payload, table, args.json)
    return exit_status(verdicts, failures)


if __name__ == "__main__":
    sys.exit(main())
