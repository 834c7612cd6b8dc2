"""Harness side of bench/jobs.py's Ray peer: a private local Ray cluster (``ray start --head
--block`` from ``bench/.venv-ray``, every port its own) and the client that submits to it
(``bench/peers/ray_jobs_client.py``, also in that venv)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from common import BENCH_DIR, RAY_VENV, Proc, free_port, log, start_process, stop_process, wait_until_ready

CLIENT = BENCH_DIR / "peers" / "ray_jobs_client.py"
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}


class RayCluster:
    """A one-node cluster in its own session: stopping the ``ray start --block`` leader stops
    its daemons, and whatever is left of the session is killed after it."""

    def __init__(self, num_cpus: int) -> None:
        self.num_cpus = num_cpus
        self.dashboard_port = free_port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        # Ray's socket paths must stay short: a private directory right under /tmp.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rj-", dir="/tmp"))
        self._proc: Proc | None = None

    def command(self) -> list[str]:
        ports = {flag: str(free_port()) for flag in (
            "--port", "--ray-client-server-port", "--dashboard-agent-listen-port",
            "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port",
            "--node-manager-port", "--object-manager-port")}
        return [str(RAY_VENV / "bin" / "ray"), "start", "--head", "--block",
                "--dashboard-port", str(self.dashboard_port), "--include-dashboard", "true",
                *(part for pair in ports.items() for part in pair),
                "--num-cpus", str(self.num_cpus), "--temp-dir", str(self.temp_dir),
                "--disable-usage-stats"]

    def start(self, timeout: float = 300.0) -> None:
        self._proc = start_process("ray-head", self.command(), env=RAY_ENV)
        # The Jobs API lives in the dashboard: ready when it answers.
        wait_until_ready(f"{self.address}/api/version", self._proc, timeout=timeout)
        log(f"ray-head: Jobs API ready on {self.address}")

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc, timeout=60.0)
            self._proc = None
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def submit_runs(self, mode: str, script: Path, stamp_dir: Path, runs: int, warmup: int,
                    gap: float, timeout: float) -> dict[str, Any]:
        """``mode`` sdk or cli: the client's JSON (its samples, Ray's version)."""
        python = str(RAY_VENV / "bin" / "python")
        command = [python, str(CLIENT), "--address", self.address, "--mode", mode,
                   "--script", str(script), "--stamp-dir", str(stamp_dir), "--runs", str(runs),
                   "--warmup", str(warmup), "--gap", str(gap), "--timeout", str(timeout),
                   "--python", python]
        log(f"ray-{mode}: {warmup} warm-up + {runs} timed submissions")
        done = subprocess.run(command, stdout=subprocess.PIPE, env={**os.environ, **RAY_ENV},
                              timeout=(runs + warmup) * (timeout + gap) + 120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"ray_jobs_client.py --mode {mode} failed ({done.returncode})")
        result: dict[str, Any] = json.loads(done.stdout)
        return result
