"""A real `stratus serve` process for the tests, with helpers to deploy and invoke."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from stratus.cli.bundle import build_bundle
from stratus.dispatch.traffic import TrafficSplit

APPS = Path(__file__).parent / "apps"
STRATUS = str(Path(sys.executable).parent / "stratus")
T = TypeVar("T")

# Small limits so the tests can exceed them cheaply.
TEST_ENV = {
    "STRATUS_MAX_BODY_BYTES": str(1024 * 1024),
    "STRATUS_TICK_S": "0.2",
    "STRATUS_MAX_BACKOFF_S": "30",
    "STRATUS_HEARTBEAT_TIMEOUT_S": "4",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def searchable_above(path: Path) -> None:
    """A server running as root runs replicas as other users, who must be able to search the
    directories above its data dir; pytest makes its temporary directories 0700."""
    if os.geteuid() != 0:
        return
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod((mode & 0o7777) | 0o001)


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def sticky_keys(shares: dict[int, int]) -> dict[int, str]:
    """A sticky key that lands on each revision of a split, found as the server assigns keys."""
    split = TrafficSplit.of(shares)
    keys: dict[int, str] = {}
    index = 0
    while len(keys) < len(split.revisions):
        keys.setdefault(split.pick_sticky(f"user-{index}"), f"user-{index}")
        index += 1
    return keys


class StratusServer:
    ready_timeout = 60.0  # seconds to wait for /readyz at start

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, *,
                 grpc: bool = False) -> None:
        self.data_dir = data_dir
        self.key = "sk-test-" + os.urandom(6).hex()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # With grpc: `stratus serve --grpc-port`, and the address gRPC clients dial.
        self.grpc_port = free_port() if grpc else None
        self.grpc_target = f"127.0.0.1:{self.grpc_port}" if grpc else ""
        self.extra_env = env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.wrapper: list[str] = []  # a command the server runs under (setpriv, say)
        self.log_path = data_dir / "server.log"
        self.http = httpx.Client(base_url=self.url, timeout=60,
                                 headers={"authorization": f"Bearer {self.key}"})

    # -- process ------------------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        # No grace period after SIGTERM (the default is 5 s) unless a test sets one.
        return {**os.environ, "STRATUS_DRAIN_GRACE_S": "0", "STRATUS_ADMIN_KEY": self.key,
                "STRATUS_URL": self.url, "STRATUS_API_KEY": self.key, **self.extra_env}

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        searchable_above(self.data_dir)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            [*self.wrapper, STRATUS, "serve", "--port", str(self.port),
             "--data-dir", str(self.data_dir),
             *(["--grpc-port", str(self.grpc_port)] if self.grpc_port else [])],
            env=self.env, stdout=log, stderr=log,
        )
        log.close()
        try:
            wait_for(self._ready, self.ready_timeout, "the server to become ready")
        except BaseException:
            # A fixture whose start fails never reaches its stop: without this the server
            # (and its replicas) outlives the test run, loading the machine for the tests after.
            self.stop(signal.SIGKILL, timeout=10)
            raise

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"server exited ({self.process.returncode}):\n{self.log_tail()}")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # -- API helpers ----------------------------------------------------------------
    def upload(self, app: str, client: httpx.Client | None = None) -> str:
        return self.upload_dir(APPS / app, client)

    def upload_dir(self, directory: Path, client: httpx.Client | None = None) -> str:
        """Upload a bundle of ``directory`` as ``client``'s namespace (default: the bootstrap
        key's, which sees every stored bundle): a namespace sees only what it uploaded."""
        http = client or self.http
        bundle = build_bundle(directory)
        if http.head(f"/api/bundles/{bundle.digest}").status_code != 200:
            response = http.put(f"/api/bundles/{bundle.digest}", content=bundle.data)
            assert response.status_code in (200, 201), response.text
        return bundle.digest

    def deploy_raw(self, app: str, entrypoint: str, **fields: Any) -> httpx.Response:
        digest = self.upload(app)
        body = {"code": {"bundle": digest, "entrypoint": entrypoint}, **fields}
        return self.http.post("/api/deployments", json=body)

    def deploy(self, app: str, entrypoint: str, *, ready: int = 0, **fields: Any) -> dict[str, Any]:
        response = self.deploy_raw(app, entrypoint, **fields)
        assert response.status_code == 200, response.text
        view: dict[str, Any] = response.json()
        if ready:
            view = self.wait_ready(view["name"], ready)
        return view

    def status(self, name: str) -> dict[str, Any]:
        response = self.http.get(f"/api/deployments/{name}")
        assert response.status_code == 200, response.text
        view: dict[str, Any] = response.json()
        return view

    def wait_ready(self, name: str, replicas: int = 1, timeout: float = 60) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            view = self.status(name)
            return view if view["replicas"]["ready"] >= replicas else None

        return wait_for(check, timeout, f"{replicas} ready replica(s) of {name}")

    def wait_replicas(self, name: str, total: int, timeout: float = 60) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            view = self.status(name)
            counts = view["replicas"]
            live = counts["ready"] + counts["starting"] + counts["draining"]
            return view if live == total else None

        return wait_for(check, timeout, f"{name} to have {total} replicas")

    def mint_key(self, namespace: str, role: str, **extra: Any) -> tuple[str, str]:
        """(id, key) of a new API key, minted with the bootstrap key."""
        response = self.http.post("/api/keys", json={"namespace": namespace, "role": role, **extra})
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["key"].startswith(body["id"] + "_")
        return str(body["id"]), str(body["key"])

    def client_as(self, credential: str, namespace: str | None = None,
                  **kwargs: Any) -> httpx.Client:
        """A client that sends ``credential`` (and ``X-Stratus-Namespace`` when given)."""
        headers = {"authorization": f"Bearer {credential}"}
        if namespace:
            headers["x-stratus-namespace"] = namespace
        return httpx.Client(base_url=self.url, headers=headers, **{"timeout": 60, **kwargs})

    def invoke(self, name: str, payload: Any = None, **kwargs: Any) -> httpx.Response:
        return self.http.post(f"/api/deployments/{name}/invoke", json=payload or {}, **kwargs)

    def delete(self, name: str) -> None:
        self.http.delete(f"/api/deployments/{name}")

    def cli(self, *args: str, check: bool = True, stdin: str | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([STRATUS, *args], env=self.env, capture_output=True, text=True,
                                input=stdin, timeout=120, cwd=cwd)
        if check and result.returncode != 0:
            raise AssertionError(f"stratus {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result


def parents() -> dict[int, int]:
    """Each live process's parent (pid to ppid), read from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # gone meanwhile
                continue
            found[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return found


def children(pid: int) -> list[int]:
    return sorted(child for child, parent in parents().items() if parent == pid)


def descendants(root: int) -> set[int]:
    by_parent: dict[int, list[int]] = {}
    for child, parent in parents().items():
        by_parent.setdefault(parent, []).append(child)
    found: set[int] = set()
    stack = [root]
    while stack:
        for child in by_parent.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
