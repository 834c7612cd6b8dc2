"""Harness side of the Ray Serve peer: venv setup, driver process, status polling, shutdown.

The driver (``bench/peers/ray_driver.py`` via ``ray_noop.py`` / ``ray_coldstart.py``) runs in
``bench/.venv-ray``; this module talks to it over its stdin/stdout line protocol.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import Any

from common import BENCH_DIR, RAY_VENV, Proc, free_port, log, start_process, stop_process

PREFIX = b"@@bench "
SETUP_SCRIPT = BENCH_DIR / "setup_ray_venv.sh"


def ensure_ray_venv() -> float:
    """Create/refresh ``bench/.venv-ray`` (idempotent); returns seconds spent."""
    started = time.monotonic()
    subprocess.run(["bash", str(SETUP_SCRIPT)], check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


class RayPeer:
    """One Ray Serve application behind the Serve HTTP proxy, in a private Ray cluster."""

    def __init__(self, script: str, name: str, env: dict[str, str] | None = None,
                 args: Sequence[str] = ()) -> None:
        self.script = BENCH_DIR / "peers" / script
        self.args = list(args)  # the script's own options, after ``--port``
        self.name = name
        self.env = {"RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1", **(env or {})}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.ray_version: str | None = None
        self._proc: Proc | None = None
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def start(self, timeout: float = 300.0) -> None:
        self._proc = start_process(
            self.name,
            [str(RAY_VENV / "bin" / "python"), str(self.script), "--port", str(self.port),
             *self.args],
            env=self.env,
            control_pipes=True,
        )
        threading.Thread(target=self._read_stdout, daemon=True).start()
        ready = self._wait_event("ready", timeout)
        self.ray_version = str(ready.get("ray_version"))
        log(f"{self.name}: Ray {self.ray_version} Serve ready on {self.url}")

    @property
    def pid(self) -> int:
        """The driver process (Ray's own processes are started under it)."""
        assert self._proc is not None, "peer not started"
        return self._proc.popen.pid

    def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.popen.stdout is not None
        with open(self._proc.log_path, "ab") as log_file:
            for raw in self._proc.popen.stdout:
                if raw.startswith(PREFIX):
                    self._events.put(json.loads(raw[len(PREFIX) :]))
                else:
                    log_file.write(raw)
                    log_file.flush()
        self._events.put(None)  # EOF: the driver exited

    def _wait_event(self, kind: str, timeout: float) -> dict[str, Any]:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.name}: no {kind!r} after {timeout:.0f}s")
            try:
                event = self._events.get(timeout=remaining)
            except queue.Empty:
                continue
            if event is None:
                raise RuntimeError(f"{self.name} exited:\n{self._proc.tail()}")
            if event.get("event") == kind:
                return event
            if event.get("event") == "error":
                raise RuntimeError(f"{self.name}: {event.get('message')}")

    def _send(self, command: str) -> None:
        assert self._proc is not None and self._proc.popen.stdin is not None
        self._proc.popen.stdin.write(command.encode() + b"\n")
        self._proc.popen.stdin.flush()

    def replica_states(self) -> dict[str, int]:
        """Replica counts by Serve state, e.g. ``{"RUNNING": 1}``; ``{}`` when none exist."""
        self._send("status")
        return {k: int(v) for k, v in self._wait_event("status", 30.0)["replicas"].items()}

    def replica_pids(self, app_name: str, state: str = "RUNNING") -> list[int]:
        """The worker pids of the application's replicas in ``state``, as Serve's controller
        knows them (a replica killed a moment ago may still be listed)."""
        self._send(f"replicas {app_name}")
        items = self._wait_event("replicas", 30.0)["items"]
        return [int(item["pid"]) for item in items if item["pid"] and item["state"] == state]

    def wait_for_zero_replicas(self, timeout: float = 120.0) -> float:
        """Block until no replica exists in any state; returns seconds waited."""
        started = time.monotonic()
        while sum(self.replica_states().values()) > 0:
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{self.name}: replicas still {self.replica_states()}")
            time.sleep(0.1)
        return time.monotonic() - started

    def stop(self) -> None:
        """``serve.shutdown()`` + ``ray.shutdown()`` in the driver, then reap its group."""
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        if proc.alive():
            try:
                assert proc.popen.stdin is not None
                proc.popen.stdin.write(b"stop\n")
                proc.popen.stdin.close()
                proc.popen.wait(timeout=90)
            except (OSError, subprocess.TimeoutExpired) as exc:
                log(f"{self.name}: clean shutdown failed ({exc!r}); killing its process group")
        stop_process(proc)
        log(f"{self.name}: Ray shut down (exit code {proc.popen.returncode})")
