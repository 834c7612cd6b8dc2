"""Shared helpers for the Stratus benchmarks: paths, processes, HTTP, stats, reports.

Everything here runs in the project venv (``.venv``) and uses only the standard library,
so ``bench/noop.py`` and ``bench/coldstart.py`` stay thin.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
MAIN_VENV = REPO_ROOT / ".venv"
RAY_VENV = BENCH_DIR / ".venv-ray"
RESULTS_DIR = BENCH_DIR / "results"
LOG_DIR = RESULTS_DIR / "logs"
WRK = os.environ.get("WRK", "wrk")
NOOP_BODY = '{"x": 1}'


def log(message: str) -> None:
    """Progress output goes to stderr so ``--json`` keeps stdout machine-readable."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def timestamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def parse_only(value: str, allowed: Sequence[str]) -> list[str]:
    """Parse ``--only a,b`` into an ordered, validated list (order follows ``allowed``)."""
    wanted = {part.strip() for part in value.split(",") if part.strip()}
    unknown = wanted - set(allowed)
    if unknown:
        raise SystemExit(f"--only: unknown target(s) {sorted(unknown)}; choose from {allowed}")
    return [name for name in allowed if name in wanted]


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Proc:
    """A child process started in its own session, with its output in a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def start_process(
    name: str,
    cmd: Sequence[str],
    env: Mapping[str, str] | None = None,
    control_pipes: bool = False,
) -> Proc:
    """Start ``cmd`` in a new session (so the whole group can be stopped later).

    Output goes to a log file; with ``control_pipes`` stdin and stdout are pipes instead
    (for a line protocol with the child) and only stderr goes to the log.
    """
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{timestamp()}-{name}.log"
    full_env = {**os.environ, **(env or {})}
    log(f"starting {name}: {' '.join(cmd)} (log: {log_path.relative_to(REPO_ROOT)})")
    with open(log_path, "wb") as out:
        popen = subprocess.Popen(
            list(cmd),
            cwd=REPO_ROOT,
            env=full_env,
            stdin=subprocess.PIPE if control_pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if control_pipes else out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Proc(name=name, popen=popen, log_path=log_path)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def session_members(sid: int) -> list[int]:
    """PIDs whose session id is ``sid`` (children may make their own process groups)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # state ppid pgrp session ...
        if int(fields[3]) == sid and fields[0] not in ("Z", "X"):  # zombies are already dead
            members.append(int(entry.name))
    return members


def _cmdline(pid: int, limit: int = 80) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return str(pid)
    text = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    return f"{pid} {text[:limit] or '(exiting)'}"


def stop_process(proc: Proc, timeout: float = 20.0) -> None:
    """SIGTERM the leader only (so it can drain its own children), then SIGKILL whatever
    is left of the session we created, reporting leftovers (a server that leaks workers)."""
    sid = proc.popen.pid  # start_new_session=True: the child leads a new session and group
    if proc.alive():
        proc.popen.send_signal(signal.SIGTERM)
        try:
            proc.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log(f"{proc.name} did not exit {timeout:g}s after SIGTERM; sending SIGKILL")
    _signal_group(sid, signal.SIGKILL)
    proc.popen.wait()
    leftovers = session_members(sid)
    if leftovers:
        names = ", ".join(_cmdline(pid) for pid in leftovers)
        log(f"{proc.name}: killing {len(leftovers)} leftover process(es) of its session: {names}")
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def wait_until_ready(url: str, proc: Proc | None, timeout: float = 60.0) -> None:
    """Poll ``url`` until it answers 200; fail early if ``proc`` dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.tail()}")
        try:
            if http_call("GET", url, timeout=2.0).status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    tail = proc.tail() if proc is not None else ""
    raise TimeoutError(f"{url} not ready after {timeout:.0f}s\n{tail}")


# --------------------------------------------------------------------------- HTTP


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http_call(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> HttpResponse:
    """One request on a fresh connection (stdlib only; header names are lower-cased)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        conn.request(method, path, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        data = resp.read()
        return HttpResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


# --------------------------------------------------------------------------- stats & reports


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, ``q`` in [0, 100]."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _command_output(cmd: Sequence[str]) -> str | None:
    try:
        done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (done.stdout or done.stderr).strip() or None


def machine_info() -> dict[str, Any]:
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = None
    try:
        meminfo = Path("/proc/meminfo").read_text()
        found = re.search(r"MemTotal:\s+(\d+) kB", meminfo)
        mem_kib = int(found.group(1)) if found else None
    except OSError:
        pass
    wrk_version = _command_output([WRK, "-v"])
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "mem_total_gib": round(mem_kib / 1024**2, 1) if mem_kib else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": wrk_version.splitlines()[0] if wrk_version else None,
        "git_commit": _command_output(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"]),
    }


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            digits = 3 if abs(value) < 10 else 2 if abs(value) < 1000 else 0
            return f"{value:,.{digits}f}"
        return str(value)

    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


def write_results(kind: str, payload: Mapping[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{kind}-{timestamp()}.json"
    path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    return path


def run_notes(rows: Sequence[Mapping[str, Any]], failures: Mapping[str, str]) -> list[str]:
    """Lines under a wrk results table: rows that saw errors, and targets that failed."""
    notes = [
        f"- {r['system']} c={r['concurrency']}: {r['non_2xx']} non-2xx responses, socket errors "
        f"{r['socket_errors']}: NOT a valid measurement"
        for r in rows
        if r["non_2xx"] or any(r["socket_errors"].values())
    ]
    notes += [f"- {name} FAILED: {error.splitlines()[0]}" for name, error in failures.items()]
    return notes


def load_arguments(description: str | None, targets: Sequence[str],
                   duration: float) -> argparse.ArgumentParser:
    """The options every wrk benchmark takes; add its own, then ``parse_load_arguments``."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--duration", type=float, default=duration, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per level")
    parser.add_argument("--concurrency", default="1,32", help="comma-separated connection counts")
    parser.add_argument("--only", default=",".join(targets), help="subset of " + ",".join(targets))
    parser.add_argument("--json", action="store_true", help="print the JSON result on stdout")
    return parser


def parse_load_arguments(parser: argparse.ArgumentParser,
                         targets: Sequence[str]) -> argparse.Namespace:
    args = parser.parse_args()
    args.targets = parse_only(args.only, targets)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    return args


WRK_SETTINGS = ("duration", "warmup", "concurrency", "threads")  # every wrk benchmark's options


def load_payload(kind: str, started: str, args: argparse.Namespace, config_keys: Sequence[str],
                 config: Mapping[str, Any], meta: Mapping[str, Any],
                 rows: Sequence[Mapping[str, Any]], failures: Mapping[str, str],
                 **extra: Any) -> dict[str, Any]:
    """The results document of a wrk benchmark: machine, settings, targets and rows."""
    return {
        "benchmark": kind,
        "started": started,
        "machine": machine_info(),
        "config": {key: getattr(args, key) for key in config_keys}
        | {"targets": args.targets, **config},
        "targets": meta,
        **extra,
        "results": rows,
        "failures": failures,
    }


def publish(kind: str, payload: Mapping[str, Any], table: str, as_json: bool) -> Path:
    """Write the results file and print the table; with ``--json`` the payload goes to
    stdout and the table to stderr."""
    path = write_results(kind, payload)
    print(table, file=sys.stderr if as_json else sys.stdout)
    if as_json:
        print(json.dumps(payload, indent=2, default=_json_default))
    log(f"results written to {path}")
    return path


def _json_default(value: object) -> object:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)  # type: ignore[call-overload]
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
