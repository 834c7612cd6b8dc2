"""The servers of ``bench/grpc.py``, each serving the same two models: Stratus (gRPC, HTTP v2
with binary tensors, HTTP v2 with JSON tensors) and Seldon MLServer (gRPC, REST).

Stratus: ``stratus serve --grpc-port N`` (issue 22), ``examples/digits/model.py:Digits`` and
``bench/handlers/tensor_mean.py`` deployed with a fixed number of replicas (torch on one thread,
64 requests at once). MLServer: ``mlserver start`` on a model repository written here, with
the runtimes of ``bench/peers/mlserver_models.py`` (torch on one thread too) in as many
``parallel_workers``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import (
    BENCH_DIR,
    MAIN_VENV,
    REPO_ROOT,
    free_port,
    log,
    start_process,
    stop_process,
    wait_until_ready,
)
from stratus_target import StratusServer, stratus_command

TARGETS = ("stratus-grpc", "stratus-http-binary", "stratus-http-json", "mlserver-grpc", "mlserver-rest")
BASELINE = "mlserver-grpc"
MODELS = {"digits": "digits", "images": "tensor-mean"}  # payload -> the name both servers serve it as
DIGITS_DIR = REPO_ROOT / "examples" / "digits"
DIGITS_WEIGHTS = DIGITS_DIR / "weights.safetensors"
MLSERVER_VENV = BENCH_DIR / ".venv-mlserver"
MLSERVER_SETUP = BENCH_DIR / "setup_mlserver_venv.sh"
# The JSON form of the 38.5 MB batch is ~200 MB: both servers must take it (and gRPC 38.5 MB).
MAX_MESSAGE_BYTES = 1 << 30


def stratus_flags(replicas: int) -> list[str]:
    """A fixed number of replicas (no autoscaling during a cell), torch on one thread each."""
    return ["--min-replicas", str(replicas), "--max-replicas", str(replicas), "--max-concurrency", "64",
            "--threads", "1", "--timeout", "300"]


@dataclass
class Endpoint:
    """One target: a protocol at a server's address."""

    target: str
    protocol: str  # grpc_client.py's --protocol
    url: str  # host:port
    server_pid: int  # its process tree's CPU time is the server's
    authorization: str | None = None
    skip: str | None = None  # why it cannot be measured (a server without a gRPC port)


@dataclass
class Server:
    name: str
    endpoints: dict[str, Endpoint]
    meta: dict[str, Any] = field(default_factory=dict)


def ensure_digits_weights() -> None:
    """Train examples/digits as ``make demo`` does (seconds, scikit-learn's bundled data)."""
    if DIGITS_WEIGHTS.exists():
        return
    log(f"training examples/digits (no {DIGITS_WEIGHTS.relative_to(REPO_ROOT)} yet)")
    subprocess.run([str(MAIN_VENV / "bin" / "python"), str(DIGITS_DIR / "train.py")], check=True,
                   cwd=DIGITS_DIR, timeout=600, stdout=sys.stderr)  # stdout is --json's


def stratus_has_grpc() -> bool:
    """Whether this build's ``stratus serve`` takes ``--grpc-port`` (issue 22)."""
    done = subprocess.run([*stratus_command(), "serve", "--help"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"})
    return "--grpc-port" in done.stdout + done.stderr


@contextmanager
def stratus_server(targets: Sequence[str], replicas: int) -> Iterator[Server]:
    ensure_digits_weights()
    grpc_port = free_port()
    grpc = "stratus-grpc" in targets and stratus_has_grpc()
    server = StratusServer("stratus-grpc-bench", env={"STRATUS_MAX_BODY_BYTES": str(MAX_MESSAGE_BYTES)},
                           serve_args=["--grpc-port", str(grpc_port)] if grpc else [])
    flags = stratus_flags(replicas)
    try:
        server.start()
        server.cli(["deploy", f"{DIGITS_DIR / 'model.py'}:Digits", "--name", MODELS["digits"],
                    *flags])
        server.deploy("tensor_mean.py", "TensorMean", MODELS["images"], flags)
        for name in MODELS.values():
            server.wait_for_replicas(name, lambda counts: counts.get("ready", 0) >= replicas)
        http, auth = f"127.0.0.1:{server.port}", f"Bearer {server.key}"
        no_grpc = None if grpc else (
            "this build's `stratus serve` has no --grpc-port (issue 22's gRPC listener is not "
            "merged into it): skipped")
        endpoints = {
            "stratus-grpc": Endpoint("stratus-grpc", "grpc", f"127.0.0.1:{grpc_port}", server.pid, auth,
                                     skip=no_grpc),
            "stratus-http-binary": Endpoint("stratus-http-binary", "http-binary", http, server.pid, auth),
            "stratus-http-json": Endpoint("stratus-http-json", "http-json", http, server.pid, auth),
        }
        meta = {"replicas_per_model": replicas, "deploy_flags": flags,
                "grpc_port": grpc_port if grpc else None, "env": server.env}
        yield Server("stratus", {t: e for t, e in endpoints.items() if t in targets}, meta)
    finally:
        server.stop()


def ensure_mlserver_venv() -> float:
    """Create/refresh ``bench/.venv-mlserver`` (idempotent); returns seconds spent."""
    started = time.monotonic()
    subprocess.run(["bash", str(MLSERVER_SETUP)], check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def mlserver_repository(root: Path, ports: dict[str, int], workers: int) -> dict[str, Any]:
    """``settings.json`` and one ``model-settings.json`` per model under ``root``."""
    settings = {
        "debug": False,  # MLServer's default (True) logs every request
        "host": "127.0.0.1",
        "http_port": ports["http"],
        "grpc_port": ports["grpc"],
        "metrics_port": ports["metrics"],
        "parallel_workers": workers,
        "grpc_max_message_length": MAX_MESSAGE_BYTES,
        "load_models_at_startup": True,
    }
    (root / "settings.json").write_text(json.dumps(settings, indent=2))
    models = {
        MODELS["digits"]: {"implementation": "mlserver_models.DigitsRuntime",
                           "parameters": {"uri": str(DIGITS_WEIGHTS)}},
        MODELS["images"]: {"implementation": "mlserver_models.TensorMeanRuntime"},
    }
    for name, model in models.items():
        (root / name).mkdir()
        (root / name / "model-settings.json").write_text(json.dumps({"name": name, **model}, indent=2))
    return settings


def mlserver_version() -> str:
    done = subprocess.run([str(MLSERVER_VENV / "bin" / "python"), "-c",
                           "import mlserver; print(mlserver.__version__)"],
                          capture_output=True, text=True, timeout=120, check=True)
    return done.stdout.strip()


@contextmanager
def mlserver_peer(targets: Sequence[str], workers: int) -> Iterator[Server]:
    ensure_digits_weights()
    setup_s = ensure_mlserver_venv()
    root = Path(tempfile.mkdtemp(prefix="stratus-bench-mlserver-"))
    ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
    settings = mlserver_repository(root, ports, workers)
    # Not bench/ itself: its grpc.py would shadow the grpcio package MLServer imports.
    path = [BENCH_DIR / "peers", BENCH_DIR / "handlers", DIGITS_DIR]
    env = {"PYTHONPATH": os.pathsep.join(map(str, path)), "OMP_NUM_THREADS": "1"}
    proc = start_process("mlserver", [str(MLSERVER_VENV / "bin" / "mlserver"), "start", str(root)], env=env)
    try:
        for name in MODELS.values():
            wait_until_ready(f"http://127.0.0.1:{ports['http']}/v2/models/{name}/ready", proc, timeout=300)
        log(f"mlserver: ready on REST :{ports['http']}, gRPC :{ports['grpc']}")
        endpoints = {
            "mlserver-grpc": Endpoint("mlserver-grpc", "grpc", f"127.0.0.1:{ports['grpc']}", proc.popen.pid),
            "mlserver-rest": Endpoint("mlserver-rest", "http-json", f"127.0.0.1:{ports['http']}",
                                      proc.popen.pid),
        }
        meta = {"mlserver_version": mlserver_version(), "settings": settings,
                "venv_setup_s": round(setup_s, 1)}
        yield Server("mlserver", {t: e for t, e in endpoints.items() if t in targets}, meta)
    finally:
        stop_process(proc)
        shutil.rmtree(root, ignore_errors=True)
