"""`make demo`: train a small CNN, serve it with Stratus on the embedded default, invoke it
through the CLI, and print cold- and warm-start latency. Everything shuts down at the end."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sklearn.datasets import load_digits

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from demo_server import STRATUS, demo_server, step  # noqa: E402


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

    with demo_server() as server:
        run_demo(server.url, server.key, server.env)


def run_demo(url: str, key: str, env: dict[str, str]) -> None:
    stratus = STRATUS
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
