"""Harness side of the Celery peer: venv setup, one worker process, Redis db, client runs.

The worker (``bench/peers/celery_noop.py``) and the client (``bench/peers/celery_client.py``)
both run in ``bench/.venv-celery``; the client prints one JSON line per measurement.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

from common import BENCH_DIR, Proc, log, start_process, stop_process

CELERY_VENV = BENCH_DIR / ".venv-celery"
SETUP_SCRIPT = BENCH_DIR / "setup_celery_venv.sh"
PEERS_DIR = BENCH_DIR / "peers"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
POOLS = ("prefork", "solo")  # prefork is Celery's default pool; solo runs tasks in the worker itself


def flush_redis(db: int) -> str:
    """Empty one Redis db with redis-py from the Celery venv (the project venv may not have
    it); returns the db's URL."""
    url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"
    ensure_celery_venv()
    subprocess.run([str(CELERY_VENV / "bin" / "python"), "-c",
                    "import redis, sys; redis.Redis.from_url(sys.argv[1]).flushdb()", url],
                   check=True, capture_output=True, timeout=60)
    return url


def ensure_celery_venv() -> float:
    """Create/refresh ``bench/.venv-celery`` (idempotent); returns seconds spent."""
    started = time.monotonic()
    subprocess.run(["bash", str(SETUP_SCRIPT)], check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


class CeleryPeer:
    """One Celery worker process (``-c 1``) on a Redis broker and result backend."""

    def __init__(self, pool: str, db: int) -> None:
        self.pool = pool
        self.redis_url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"
        self.db = db
        self.env = {"BENCH_CELERY_REDIS": self.redis_url, "PYTHONUNBUFFERED": "1"}
        self._proc: Proc | None = None
        self.version = self._python(["-c", "import celery; print(celery.__version__)"]).strip()

    def _python(self, args: list[str], stdin: str | None = None, timeout: float = 600.0) -> str:
        done = subprocess.run([str(CELERY_VENV / "bin" / "python"), *args], cwd=PEERS_DIR,
                              env={**os.environ, **self.env}, input=stdin,
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"celery client {args[:2]} failed ({done.returncode}):\n"
                               f"{done.stdout[-2000:]}{done.stderr[-3000:]}")
        return done.stdout

    def flush(self) -> None:
        """Empty the bench's Redis db: no queued message or result survives from a run before."""
        flush_redis(self.db)

    def worker_command(self) -> list[str]:
        return [str(CELERY_VENV / "bin" / "celery"), "--workdir", str(PEERS_DIR), "-A", "celery_noop",
                "worker",
                "--pool", self.pool, "--concurrency", "1", "--hostname", f"bench-{self.pool}@%h"]

    def start_worker(self) -> Proc:
        """Start the worker, not waiting for it (``--workdir`` lets it import the app)."""
        self._proc = start_process(f"celery-{self.pool}", self.worker_command(), env=self.env)
        return self._proc

    def start(self, timeout: float = 60.0) -> float:
        """Start the worker and wait until it has run one task; returns seconds."""
        began = time.monotonic()
        proc = self.start_worker()
        self.client("ping", "--timeout", str(timeout))
        if not proc.alive():
            raise RuntimeError(f"celery worker exited:\n{proc.tail()}")
        seconds = time.monotonic() - began
        log(f"celery-{self.pool}: Celery {self.version} worker ready in {seconds:.2f}s")
        return seconds

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None

    def client(self, *args: str, timeout: float = 900.0) -> dict[str, Any]:
        """Run ``celery_client.py <args>`` to completion; returns its JSON line."""
        out = self._python(["celery_client.py", *args], timeout=timeout)
        return dict(json.loads(out.strip().splitlines()[-1]))

    def cold_start(self, timeout: float = 120.0) -> dict[str, float]:
        """Worker cold start: the client connects first; then the clock starts, the worker is
        spawned and one task is submitted at once; the run ends when its result is read."""
        self.stop()
        self.flush()
        client = subprocess.Popen([str(CELERY_VENV / "bin" / "python"), "celery_client.py", "first",
                                   "--timeout", str(timeout)], cwd=PEERS_DIR,
                                  env={**os.environ, **self.env}, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        assert client.stdin is not None and client.stdout is not None
        try:
            if json.loads(client.stdout.readline() or "{}").get("ready") is not True:
                raise RuntimeError("celery client did not connect")
            began = time.time()
            self.start_worker()
            client.stdin.write("go\n")
            client.stdin.flush()
            line = client.stdout.readline()
            client.wait(timeout=30)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
        if not line:
            raise RuntimeError(f"celery cold start: no result (exit {client.returncode})")
        record = json.loads(line)
        return {"to_result_s": record["done"] - began,
                "to_handler_start_s": record["handler_start"] - began}
