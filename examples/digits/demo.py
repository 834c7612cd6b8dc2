"""`make demo`: train a small CNN, serve it with Stratus on the embedded default, invoke it
through the CLI, and print cold- and warm-start latency. Everything shuts down at the end."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from sklearn.datasets import load_digits

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(HERE))


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


def wait_for_zero(client: httpx.Client, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        replicas = client.get(f"/api/deployments/{name}").json()["replicas"]
        if replicas["ready"] + replicas["starting"] + replicas["draining"] == 0:
            return
        time.sleep(0.2)
    raise SystemExit(f"{name} did not scale to zero")


def main() -> None:
    from train import train

    step("training the digits CNN on scikit-learn's bundled digits (no download)")
    started = time.perf_counter()
    accuracy = train()
    print(f"    held-out accuracy {accuracy:.3f}, trained in {time.perf_counter() - started:.1f}s")

    port, key = free_port(), "sk-demo-" + secrets.token_hex(8)
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "STRATUS_ADMIN_KEY": key, "STRATUS_URL": url, "STRATUS_API_KEY": key}
    with tempfile.TemporaryDirectory(prefix="stratus-demo-") as data_dir:
        step(f"starting `stratus serve` on {url} (SQLite and local processes in {data_dir})")
        server = subprocess.Popen(
            [str(BIN / "stratus"), "serve", "--port", str(port), "--data-dir", data_dir,
             "--log-level", "warning"],
            env=env,
        )
        try:
            wait_until_ready(url, server)
            run_demo(url, key, env)
        finally:
            step("shutting down")
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
            # uvicorn re-raises SIGTERM after its graceful shutdown, hence -15.
            print(f"    server stopped (exit status {server.returncode})")


def run_demo(url: str, key: str, env: dict[str, str]) -> None:
    stratus = str(BIN / "stratus")
    step("deploying examples/digits/model.py:Digits with --min-replicas 0")
    subprocess.run([stratus, "deploy", str(HERE / "model.py:Digits"), "--min-replicas", "0",
                    "--scale-to-zero-after", "2"], env=env, check=True)

    digits = load_digits()
    sample = {"pixels": [digits.data[i].tolist() for i in range(3)]}
    step(f"invoking through the CLI (true labels {digits.target[:3].tolist()})")
    subprocess.run([stratus, "invoke", "digits", json.dumps(sample), "--include"], env=env,
                   check=True)

    client = httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"}, timeout=60)
    body = {"pixels": [digits.data[7].tolist()]}
    cold: list[float] = []
    for _ in range(3):
        wait_for_zero(client, "digits")
        started = time.perf_counter()
        response = client.post("/api/deployments/digits/invoke", json=body)
        cold.append((time.perf_counter() - started) * 1000)
        assert response.headers["x-stratus-cold-start"] == "true", response.headers
    warm: list[float] = []
    for _ in range(50):
        started = time.perf_counter()
        client.post("/api/deployments/digits/invoke", json=body).raise_for_status()
        warm.append((time.perf_counter() - started) * 1000)
    step("latency through the gateway (HTTP round trip, this machine)")
    print(f"    cold start (zero replicas -> first response): median {statistics.median(cold):.1f} ms"
          f" over {len(cold)} runs {[round(c, 1) for c in cold]}")
    print(f"    warm: median {statistics.median(warm):.2f} ms, "
          f"p90 {sorted(warm)[int(len(warm) * 0.9)]:.2f} ms over {len(warm)} requests")
    status = client.get("/api/deployments/digits").json()
    print(f"    status: revision {status['revision']}, {status['replicas']['ready']} ready replica(s),"
          f" autoscaler: {status['autoscaler']['reason']}")
    client.close()


if __name__ == "__main__":
    main()
