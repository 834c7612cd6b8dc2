"""One cell of ``bench/grpc.py``: a target at a stream count, driven by client processes
(``grpc_client.py``) started together, with the server's CPU time read from ``/proc`` over
the same window."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from common import BENCH_DIR, MAIN_VENV, Proc, log, start_process, stop_process
from grpc_stats import merge, split_streams
from grpc_targets import Endpoint
from procfs import cpu_seconds, tree_cpu_seconds

CLIENT = BENCH_DIR / "grpc_client.py"
READY_TIMEOUT_S = 120.0  # imports, the payload (a 200 MB JSON body takes seconds), the first call


class TargetUnavailable(RuntimeError):
    """The server did not answer this target's protocol: its other cells are skipped."""


class LoadClient:
    """A ``grpc_client.py`` process and the lines it prints."""

    def __init__(self, name: str, cmd: Sequence[str], env: dict[str, str]) -> None:
        self.proc: Proc = start_process(name, cmd, env=env, control_pipes=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.popen.stdout is not None
        for raw in self.proc.popen.stdout:
            self.lines.put(raw.decode(errors="replace").strip())
        self.lines.put(None)

    def next_line(self, timeout: float) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"{self.proc.name}: nothing printed in {timeout:.0f}s") from None
        if line is None:
            raise RuntimeError(f"{self.proc.name} exited ({self.proc.popen.wait()}):\n{self.proc.tail()}")
        return line

    def send(self, line: str) -> None:
        assert self.proc.popen.stdin is not None
        self.proc.popen.stdin.write(line.encode() + b"\n")
        self.proc.popen.stdin.flush()

    def stop(self) -> None:
        stop_process(self.proc, timeout=5.0)


def client_command(endpoint: Endpoint, model: str, payload: str, streams: int,
                   args: Any, min_requests: int) -> list[str]:
    return [
        str(MAIN_VENV / "bin" / "python"), str(CLIENT),
        "--protocol", endpoint.protocol, "--url", endpoint.url, "--model", model,
        "--payload", payload, "--batch", str(args.batch), "--streams", str(streams),
        "--warmup", str(args.warmup), "--duration", str(args.duration),
        "--min-requests", str(min_requests), "--max-window", str(args.max_window),
    ]


def run_cell(endpoint: Endpoint, model: str, payload: str, streams: int, args: Any,
             min_requests: int) -> dict[str, Any]:
    """Start the clients, wait until each has had one answer, let them go at once, and merge
    their reports with the server's CPU seconds over the measured window."""
    env = {"BENCH_AUTHORIZATION": endpoint.authorization or "", "OMP_NUM_THREADS": "1"}
    shares = split_streams(streams, args.clients)
    clients = [
        LoadClient(f"client-{endpoint.target}-{payload}-c{streams}-{i}",
                   client_command(endpoint, model, payload, share, args, min_requests), env)
        for i, share in enumerate(shares)
    ]
    try:
        for client in clients:
            line = client.next_line(READY_TIMEOUT_S)
            if line != "ready":
                fatal = json.loads(line).get("fatal", line) if line.startswith("{") else line
                raise TargetUnavailable(fatal)
        for client in clients:
            client.send("go")
        time.sleep(args.warmup)
        server_before = tree_cpu_seconds(endpoint.server_pid), cpu_seconds(endpoint.server_pid)
        time.sleep(args.duration)
        server_cpu = tree_cpu_seconds(endpoint.server_pid) - server_before[0]
        server_main_cpu = cpu_seconds(endpoint.server_pid) - server_before[1]
        wait = args.max_window + 360.0  # a stretched window, then one last call's timeout
        reports = [json.loads(client.next_line(wait)) for client in clients]
    finally:
        for client in clients:
            client.stop()
    cell = merge(reports, int(reports[0]["request_tensor_bytes"]))
    errors = [sample for report in reports for sample in report["error_samples"]]
    row = {
        "target": endpoint.target,
        "protocol": endpoint.protocol,
        "payload": payload,
        "streams": streams,
        "clients": len(clients),
        **asdict(cell),
        "tensor_bytes": int(reports[0]["request_tensor_bytes"]),
        "window_s": max(float(r["window_s"]) for r in reports),
        "server_cpu_s": server_cpu,
        "server_main_cpu_s": server_main_cpu,  # Stratus: the gateway; MLServer: not its workers
        "cpu_window_s": args.duration,
        "error_samples": errors[:3],
        "check": reports[0]["check"],
    }
    log(f"{endpoint.target} {payload} c={streams}: {cell.requests_per_s:,.1f} req/s, "
        f"p50 {cell.p50_ms:.2f} ms, {cell.gbps:.3f} GB/s, errors {cell.errors}; "
        f"CPU s client {cell.client_cpu_s:.1f} server {server_cpu:.1f} over {args.duration:g}s")
    return row
