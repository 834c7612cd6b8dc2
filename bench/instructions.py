"""Gateway instructions per no-op invoke, counted by callgrind: the request path's cost in a
figure that the machine's noise does not move, for comparing source trees.

    .venv/bin/python bench/instructions.py [--tree name=SRC ...] [--requests 1000] [--rounds 2]
        [--workload sync|async] [--concurrency 32]

``--workload async`` counts asynchronous invocations instead (``?mode=async``): ``--requests``
submissions from ``--concurrency`` senders (aiohttp, as ``bench/async.py``), then the wait until
the last result is stored; the count covers the 202s, the queue's writes, the claims, the
dispatch and the finishes, in every thread of the server.

Each tree (default: this checkout's ``src``) serves the no-op handler from a server run under
``valgrind --tool=callgrind`` with instrumentation off until a warm-up is done; then
``callgrind_control`` counts ``--requests`` sequential invokes and dumps. Trees are run
alternately, ``--rounds`` times each, so that a drift of the machine falls on all of them.
Only the gateway process is counted: the replica runs uninstrumented, as do the zygotes.
Counters tick with background work too (ticks, flushes, samplers), so a run that takes longer
counts a little more: expect about 1% between runs of one tree.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    BENCH_DIR,
    MAIN_VENV,
    NOOP_BODY,
    REPO_ROOT,
    free_port,
    log,
    machine_info,
    markdown_table,
    publish,
    start_process,
    stop_process,
    timestamp,
    wait_until_ready,
)
from stratus_async import AsyncClient
from stratus_async import run as run_client

KEY = "sk-bench-instructions"
WARMUP = 300  # invokes before counting: the replica up, the gateway's caches filled
START_TIMEOUT_S = 900.0  # a server under valgrind imports its dependencies some 30x slower


def invoke(connection: http.client.HTTPConnection, path: str) -> None:
    """One invoke on a kept-alive connection, as wrk's are: the count is the request path's,
    not a connection's set-up."""
    connection.request("POST", path, body=NOOP_BODY.encode(),
                       headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
    answer = connection.getresponse()
    body = answer.read()
    if answer.status != 200:
        raise RuntimeError(f"POST {path} -> {answer.status} {body[:300]!r}")


async def submit_and_drain(client: AsyncClient, n: int, concurrency: int) -> None:
    """``n`` async submissions from ``concurrency`` senders, then wait until none is pending:
    the long poll on the last one, then a few cheap lists (not a poll every few ms, which the
    slowed server would count)."""
    ids: list[str] = []
    remaining = iter(range(n))

    async def sender() -> None:
        for _ in remaining:
            ids.append(await client.submit())

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    await client.wait(ids[-1], START_TIMEOUT_S)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not await client.drained():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{n} async invocations not drained in {START_TIMEOUT_S:g}s")
        await asyncio.sleep(0.2)


def run_async(base: str, requests: int, concurrency: int) -> None:
    run_client(submit_and_drain, base, {"Authorization": f"Bearer {KEY}"}, "async-noop",
               concurrency, requests, concurrency)


def count(tree: str, src: Path, requests: int, workload: str = "sync",
          concurrency: int = 32) -> dict[str, Any]:
    """One server on ``src``: instructions over ``requests`` invokes after the warm-up."""
    port, data = free_port(), Path(tempfile.mkdtemp(prefix="bench-instructions-"))
    out = data / "callgrind.out"
    env = {"PYTHONPATH": str(src), "STRATUS_ADMIN_KEY": KEY}
    server = start_process(f"callgrind-{tree}", [
        "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
        str(MAIN_VENV / "bin" / "python"), str(MAIN_VENV / "bin" / "stratus"), "serve",
        "--port", str(port), "--data-dir", str(data / "server"),
    ], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{base}/readyz", server, timeout=START_TIMEOUT_S)
        handler = "noop.py:NoOp" if workload == "sync" else "async_noop.py:AsyncNoOp"
        name = "noop" if workload == "sync" else "async-noop"
        subprocess.run(
            [str(MAIN_VENV / "bin" / "stratus"), "deploy", handler, "--name", name,
             "--min-replicas", "1", "--max-replicas", "1", "--max-concurrency", "64"],
            cwd=BENCH_DIR / "handlers", check=True, capture_output=True, timeout=START_TIMEOUT_S,
            env={**os.environ, **env, "STRATUS_URL": base, "STRATUS_API_KEY": KEY})
        path = f"/api/deployments/{name}/invoke"
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120.0)
        if workload == "sync":
            for _ in range(WARMUP):
                invoke(connection, path)
        else:
            run_async(base, WARMUP, concurrency)
        pid = str(server.popen.pid)  # valgrind runs the server in its own process
        subprocess.run(["callgrind_control", "--instr=on", pid], check=True, capture_output=True)
        started = time.monotonic()
        if workload == "sync":
            for _ in range(requests):
                invoke(connection, path)
        else:
            run_async(base, requests, concurrency)
        wall = time.monotonic() - started
        # A dump writes the counts since instrumentation began, then zeroes them.
        subprocess.run(["callgrind_control", "--dump", pid], check=True, capture_output=True)
        total = _dumped_total(out)
        connection.close()
    finally:
        stop_process(server)
        shutil.rmtree(data, ignore_errors=True)
    log(f"{tree}: {total / requests:,.0f} instructions per {workload} invoke ({wall:.1f}s)")
    return {"tree": tree, "src": str(src), "workload": workload, "requests": requests,
            "wall_s": round(wall, 2),
            "instructions": total, "per_request": round(total / requests)}


def _dumped_total(out: Path) -> int:
    """The ``summary:`` of the dump that ``--dump`` made (``<out>.1``)."""
    deadline = time.monotonic() + 30
    dump = out.with_name(out.name + ".1")
    while time.monotonic() < deadline:
        if dump.exists():
            for line in dump.read_text().splitlines():
                if line.startswith(("summary:", "totals:")):
                    return int(line.split()[1])
        time.sleep(0.2)
    raise RuntimeError(f"callgrind wrote no dump at {dump}")


def parse_trees(values: list[str] | None) -> dict[str, Path]:
    if not values:
        return {"this": REPO_ROOT / "src"}
    trees = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not (Path(path) / "stratus").is_dir():
            raise SystemExit(f"--tree {value!r}: want NAME=SRC, SRC holding the stratus package")
        trees[name] = Path(path).resolve()
    return trees


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--tree", action="append", help="NAME=SRC (repeatable)")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workload", choices=("sync", "async"), default="sync",
                        help="sequential sync invokes, or async submissions and their drain")
    parser.add_argument("--concurrency", type=int, default=32,
                        help="concurrent senders of the async workload")
    parser.add_argument("--json", action="store_true", help="print the JSON result on stdout")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    trees = parse_trees(args.tree)
    started = timestamp()
    runs = [count(name, src, args.requests, args.workload, args.concurrency)
            for _ in range(args.rounds) for name, src in trees.items()]
    rows = []
    for name in trees:
        mine = [run["per_request"] for run in runs if run["tree"] == name]
        rows.append([name, len(mine), statistics.mean(mine), min(mine), max(mine)])
    table = markdown_table(["tree", "runs", "instructions/invoke (mean)", "min", "max"], rows)
    payload = {"benchmark": "instructions", "started": started, "machine": machine_info(),
               "config": {"requests": args.requests, "rounds": args.rounds,
                          "workload": args.workload, "concurrency": args.concurrency,
                          "trees": {k: str(v) for k, v in trees.items()}},
               "results": runs}
    publish("instructions", payload, table, args.json)


if __name__ == "__main__":
    main()
