"""What every demo needs: a throwaway `stratus serve` on the embedded default (SQLite and
local processes in a temporary data dir), its URL and key, and a clean shutdown."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent
STRATUS = str(BIN / "stratus")


@dataclass(frozen=True)
class DemoServer:
    url: str
    key: str
    env: dict[str, str]  # STRATUS_URL and STRATUS_API_KEY set, for the CLI


def step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with code {process.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit("the server did not become ready")


@contextmanager
def demo_server() -> Iterator[DemoServer]:
    port, key = free_port(), "sk-demo-" + secrets.token_hex(8)
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "STRATUS_ADMIN_KEY": key, "STRATUS_URL": url, "STRATUS_API_KEY": key}
    with tempfile.TemporaryDirectory(prefix="stratus-demo-") as data_dir:
        step(f"starting `stratus serve` on {url} (SQLite and local processes in {data_dir})")
        server = subprocess.Popen(
            [STRATUS, "serve", "--port", str(port), "--data-dir", data_dir,
             "--log-level", "warning"],
            env=env,
        )
        try:
            wait_until_ready(url, server)
            yield DemoServer(url, key, env)
        finally:
            step("shutting down")
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()  # for its exit status, which stays None until then
            # 0 after a graceful drain (tests/integration/test_drain.py); -9 if it had to be killed.
            print(f"    server stopped (exit status {server.returncode})")
