"""Harness side of Stratus: start the server, deploy a handler, invoke, read replica counts.

Written against the contract in the benchmark brief (the server is being built alongside);
every call into Stratus lives here in one small function, so fixing a drift is one edit:

* ``STRATUS_ADMIN_KEY=<key> stratus serve --host H --port P --data-dir D``; ready on
  ``GET /readyz`` == 200;
* ``stratus deploy file.py:Class --name N ...`` with ``STRATUS_URL`` / ``STRATUS_API_KEY``;
* ``POST /api/deployments/{name}/invoke`` (Bearer auth, JSON in and out, headers
  ``X-Stratus-Cold-Start`` and ``X-Stratus-Revision``);
* ``GET /api/deployments/{name}`` -> ``{"replicas": {"ready", "starting", "draining",
  "items": [{"pid", "state", ...}]}}``;
* model store: ``stratus models push NAME PATH --version V`` (same env); blobs live under
  ``<data-dir>/**/blobs/sha256/<ab>/<sha256>``; a handler deployed with ``--model NAME@V``
  gets the weights from ``ctx.load_model(NAME)``;
* zygotes: children of the server process whose cmdline contains ``stratus.runtime.zygote``.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from common import (
    BENCH_DIR,
    MAIN_VENV,
    REPO_ROOT,
    Proc,
    free_port,
    http_call,
    log,
    start_process,
    stop_process,
    wait_until_ready,
)
from procfs import children, cmdline

# Override with STRATUS_BIN=/path/to/stratus to benchmark another build of the CLI.
STRATUS_BIN = Path(os.environ.get("STRATUS_BIN", MAIN_VENV / "bin" / "stratus"))
HANDLERS_DIR = BENCH_DIR / "handlers"
ReplicaCounts = dict[str, int]


def stratus_command() -> list[str]:
    if not STRATUS_BIN.exists():
        raise RuntimeError(
            f"{STRATUS_BIN} not found: install the project into .venv "
            "(`.venv/bin/pip install -e .`) or run with --only to skip Stratus"
        )
    return [str(STRATUS_BIN)]


class StratusServer:
    """A throwaway Stratus server on a free loopback port with its own data dir."""

    def __init__(self, name: str = "stratus", env: dict[str, str] | None = None,
                 serve_args: Sequence[str] = (), config: dict[str, Any] | None = None) -> None:
        self.name = name
        self.env = dict(env or {})  # extra environment of ``stratus serve``
        self.serve_args = list(serve_args)  # extra options of ``stratus serve`` (--grpc-port N)
        self.key = secrets.token_urlsafe(24)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.data_dir = Path(tempfile.mkdtemp(prefix="stratus-bench-"))
        if config:  # the server's config file (JSON is YAML)
            (self.data_dir / "stratus.yaml").write_text(json.dumps(config))
        self._proc: Proc | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> None:
        cmd = [
            *stratus_command(),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            *self.serve_args,
        ]
        self._proc = start_process(self.name, cmd, env={**self.env, "STRATUS_ADMIN_KEY": self.key})
        wait_until_ready(f"{self.base_url}/readyz", self._proc, timeout=timeout)
        log(f"{self.name}: ready on {self.base_url}")

    @property
    def pid(self) -> int:
        """The ``stratus serve`` process."""
        assert self._proc is not None, "server not started"
        return self._proc.popen.pid

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None
        shutil.rmtree(self.data_dir, ignore_errors=True)

    # -- control plane -----------------------------------------------------------------

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def cli(self, args: Sequence[str], timeout: float = 300.0) -> str:
        """Run ``stratus <args>`` against this server; returns its stdout."""
        cmd = [*stratus_command(), *args]
        env = {"STRATUS_URL": self.base_url, "STRATUS_API_KEY": self.key}
        log(f"{self.name}: {' '.join(cmd[1:])}")
        done = subprocess.run(
            cmd,
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            output = f"{done.stdout}{done.stderr}"
            raise RuntimeError(f"stratus {args[0]} failed ({done.returncode}):\n{output}")
        return done.stdout

    def deploy(self, handler_file: str, class_name: str, name: str, flags: Sequence[str]) -> None:
        """``stratus deploy bench/handlers/<file>:<Class> --name <name> <flags>``."""
        self.cli(["deploy", f"{HANDLERS_DIR / handler_file}:{class_name}", "--name", name, *flags])

    def push_model(self, name: str, path: Path, version: str) -> None:
        """``stratus models push <name> <path> --version <version>``."""
        self.cli(["models", "push", name, str(path), "--version", version], timeout=900)

    def metric(self, name: str) -> float:
        """One unlabelled series of the server's /metrics (0 when absent)."""
        response = http_call("GET", f"{self.base_url}/metrics", headers=self.auth_headers())
        if response.status != 200:
            raise RuntimeError(f"/metrics answered {response.status}")
        for line in response.body.decode().splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
        return 0.0

    def model_blobs(self, sha256: str) -> list[Path]:
        """The store's copy of a pushed file, found by its digest in the data dir."""
        return sorted(self.data_dir.glob(f"**/blobs/sha256/{sha256[:2]}/{sha256}"))

    def model_copies(self, sha256: str) -> list[Path]:
        """The decrypted copy replicas map: on the data disk (``run/plain``), or in
        ``/dev/shm/stratus-<uid>/<tag of the data dir>`` (``artifacts.plaintext: memory``)."""
        tag = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:16]
        places = [self.data_dir / "run" / "plain", Path(f"/dev/shm/stratus-{os.getuid()}") / tag]
        return [place / "blobs" / sha256 for place in places if (place / "blobs" / sha256).is_file()]

    def replicas(self, name: str) -> ReplicaCounts:
        resp = http_call("GET", f"{self.base_url}/api/deployments/{name}", headers=self.auth_headers())
        if resp.status != 200:
            raise RuntimeError(f"GET deployment {name}: {resp.status} {resp.body[:300]!r}")
        counts = resp.json()["replicas"]
        return {k: int(counts.get(k, 0)) for k in ("ready", "starting", "draining")}

    def replica_pids(self, name: str, state: str | None = None) -> list[int]:
        """PIDs of the deployment's replicas (``replicas.items[].pid``) in ``state``, or any."""
        resp = http_call("GET", f"{self.base_url}/api/deployments/{name}", headers=self.auth_headers())
        if resp.status != 200:
            raise RuntimeError(f"GET deployment {name}: {resp.status} {resp.body[:300]!r}")
        items = resp.json()["replicas"].get("items", [])
        return [int(item["pid"]) for item in items
                if item.get("pid") and state in (None, item.get("state"))]

    def zygote_pids(self) -> list[int]:
        return [pid for pid in children(self.pid) if "stratus.runtime.zygote" in cmdline(pid)]

    def wait_for_replicas(
        self, name: str, done: Callable[[ReplicaCounts], bool], timeout: float = 120.0
    ) -> float:
        """Poll the deployment until ``done(counts)``; returns seconds waited."""
        started = time.monotonic()
        counts = self.replicas(name)
        while not done(counts):
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{self.name}: deployment {name} stuck at {counts}")
            time.sleep(0.1)
            counts = self.replicas(name)
        return time.monotonic() - started

    # -- data plane --------------------------------------------------------------------

    def invoke_url(self, name: str) -> str:
        return f"{self.base_url}/api/deployments/{name}/invoke"


def no_replicas(counts: ReplicaCounts) -> bool:
    return sum(counts.values()) == 0


def has_ready_replica(counts: ReplicaCounts) -> bool:
    return counts.get("ready", 0) >= 1
