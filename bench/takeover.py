"""The server upgrade in place (`stratus serve --takeover`, docs/reliability.md): how long the
server accepts nothing (the gap), and what clients see, idle and under an open-loop load.

Scenarios: ``idle`` takes over a server with three warm replicas ``--repeat`` times in a row,
with no load: the gap alone. ``load`` sends ``--rate`` requests a second for ``--seconds``
on keep-alive connections and takes over ``--at`` seconds in: failures, cold starts (replica
pids before and after) and the latency the gap adds. No peer is measured: Ray Serve, KServe
and BentoML have no upgrade of their own process that keeps its replicas (a Ray upgrade
restarts the cluster), so there is no like-for-like run.

    .venv/bin/python bench/takeover.py [--scenarios idle,load] [--rate 200] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import threading
import time
from typing import Any

from common import log, machine_info, markdown_table, parse_only, percentile, publish, timestamp
from reliability_load import LoadAverage, open_loop
from stratus_target import StratusServer, stratus_command

SCENARIOS = ("idle", "load")
NAME = "takeover"


def take_over(server: StratusServer) -> dict[str, Any]:
    """`stratus serve --takeover` on the server's data dir; its report (run/takeover.json)."""
    started = time.monotonic()
    done = subprocess.run([*stratus_command(), "serve", "--takeover", "--data-dir",
                           str(server.data_dir)], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"takeover failed ({done.returncode}): {done.stderr}")
    report = json.loads((server.data_dir / "run" / "takeover.json").read_text())
    report["command_s"] = round(time.monotonic() - started, 3)
    log(f"takeover: {done.stderr.strip()}")
    return dict(report)


def replica_pids(server: StratusServer) -> list[int]:
    view = json.loads(server.cli(["status", NAME, "--json"]))
    return sorted(item["pid"] for item in view["replicas"]["items"])


def idle(server: StratusServer, repeat: int) -> list[dict[str, Any]]:
    rows = []
    for _ in range(repeat):
        before = replica_pids(server)
        report = take_over(server)
        rows.append({"scenario": "idle", "gap_ms": round(report["paused_s"] * 1000),
                     "command_s": report["command_s"], "generation": report["generation"],
                     "replicas_kept": replica_pids(server) == before})
    return rows


def under_load(server: StratusServer, rate: float, seconds: float, at: float) -> dict[str, Any]:
    before = replica_pids(server)
    reports: list[dict[str, Any]] = []
    upgrade = threading.Timer(at, lambda: reports.append(take_over(server)))
    upgrade.start()
    load = LoadAverage()
    with load.sampling():
        answers = open_loop(server.base_url, server.key, f"/api/deployments/{NAME}/invoke",
                            rate, seconds, {"x": 1}, timeout_s=60.0)
    upgrade.join()
    latencies = sorted(a.latency_s for a in answers if a.status == 200)
    report = reports[0]
    return {"scenario": f"load {rate:g}/s", "gap_ms": round(report["paused_s"] * 1000),
            "command_s": report["command_s"], "generation": report["generation"],
            "replicas_kept": replica_pids(server) == before, "sent": len(answers),
            "failed": sum(1 for a in answers if a.status != 200),
            "p50_ms": round(percentile(latencies, 50) * 1000, 1),
            "p99_ms": round(percentile(latencies, 99) * 1000, 1),
            "max_ms": round(latencies[-1] * 1000, 1) if latencies else None,
            "connections_adopted": report["connections"], "load_average": load.range()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="idle,load")
    parser.add_argument("--repeat", type=int, default=3, help="idle takeovers in a row")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--at", type=float, default=5.0, help="when the takeover starts")
    parser.add_argument("--json", action="store_true", help="print the JSON result on stdout")
    args = parser.parse_args()
    scenarios = parse_only(args.scenarios, SCENARIOS)
    started = timestamp()
    server = StratusServer()
    rows: list[dict[str, Any]] = []
    try:
        server.start()
        server.deploy("noop.py", "NoOp", NAME, ["--min-replicas", "3", "--max-replicas", "3"])
        if "idle" in scenarios:
            rows += idle(server, args.repeat)
        if "load" in scenarios:
            rows.append(under_load(server, args.rate, args.seconds, args.at))
    finally:
        server.stop()
    payload = {"started": started, "machine": machine_info(), "args": vars(args), "rows": rows}
    columns = ["scenario", "gap_ms", "command_s", "generation", "replicas_kept", "sent",
               "failed", "p50_ms", "p99_ms", "max_ms", "connections_adopted"]
    table = markdown_table(columns, [[row.get(c, "") for c in columns] for row in rows])
    publish("takeover", payload, table, args.json)


if __name__ == "__main__":
    main()
