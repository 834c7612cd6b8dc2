"""The three targets of ``bench/models.py`` (Stratus, a fresh process, Ray Serve) and the
replica-memory measurement. Stratus calls go through ``stratus_target.StratusServer``,
Ray's through ``ray_target.RayPeer`` with ``bench/peers/ray_model.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coldstart import ray_metrics_env
from common import MAIN_VENV, http_call, log
from modelkit import PROCESS_SCRIPT, ModelFiles, resident_fraction
from procfs import cmdline, descendants, io_read_bytes, smaps_rollup_kib
from ray_target import RayPeer, ensure_ray_venv
from stratus_target import StratusServer, no_replicas

MODEL_NAME = "bench-weights"  # keep in sync with bench/handlers/model_forward.py
MODEL_VERSION = "1.0.0"
HANDLER = ("model_forward.py", "ModelForward")
IDLE_SECONDS = 1  # all servers go back to zero after ~1 s without traffic
# Stratus replicas and Ray replicas (OMP_NUM_THREADS = num_cpus = 1) run torch on one
# thread; the process target is given the same.
PROCESS_ENV = {"OMP_NUM_THREADS": "1"}
PLAINTEXT = os.environ.get("BENCH_STRATUS_PLAINTEXT", "")  # empty: the server's default


@dataclass
class Invocation:
    seconds: float  # what the client waited: request sent (or process spawned) to answer
    body: dict[str, Any]  # checksum, pid, threads, load_s, forward_s, ...
    read_bytes: int | None  # storage reads by the process that loaded the weights
    cold_header: bool | None = None
    sent_at: float = 0.0  # time.monotonic() when the request left, and when its answer came
    answered_at: float = 0.0


@dataclass
class ModelTarget:
    name: str
    files: list[Path]  # the weight files this target reads: warmed or dropped before a run
    invoke: Callable[[float], Invocation]
    also_dropped: list[Path] = field(default_factory=list)  # cold runs drop these too
    server_pid: int | None = None  # a server whose own reads count (its read-ahead)
    wait_for_zero: Callable[[], float] = lambda: 0.0
    idle_before: bool = True  # servers idle a while after reaching zero, as in coldstart.py
    meta: dict[str, Any] = field(default_factory=dict)


def post_json(url: str, headers: dict[str, str], payload: dict[str, Any], timeout: float) -> Invocation:
    """POST, then read the answering replica's ``read_bytes`` before it can scale away."""
    data = json.dumps(payload).encode()
    started = time.monotonic()
    resp = http_call("POST", url, data, {"Content-Type": "application/json", **headers}, timeout=timeout)
    answered = time.monotonic()
    if resp.status != 200:
        raise RuntimeError(f"POST {url} -> {resp.status} {resp.body[:300]!r}")
    body = resp.json()
    cold = resp.headers.get("x-stratus-cold-start")
    return Invocation(
        answered - started, body, io_read_bytes(int(body["pid"])),
        None if cold is None else cold.lower() == "true", started, answered,
    )


# --------------------------------------------------------------------------- cold-start targets


def stratus_flags(min_replicas: int, max_replicas: int) -> list[str]:
    return [
        *("--model", f"{MODEL_NAME}@{MODEL_VERSION}"),
        *("--min-replicas", str(min_replicas), "--max-replicas", str(max_replicas)),
        *("--scale-to-zero-after", str(IDLE_SECONDS), "--preload", "torch", "--timeout", "120"),
    ]


@contextmanager
def stratus_server(files: ModelFiles, server_name: str) -> Iterator[tuple[StratusServer, list[Path]]]:
    """A fresh server with the weights pushed; yields it and the store's blob path(s).
    ``BENCH_STRATUS_PLAINTEXT``: the server's ``artifacts.plaintext`` (disk, memory)."""
    server = StratusServer(server_name, config={"artifacts": {"plaintext": PLAINTEXT}} if PLAINTEXT else None)
    try:
        server.start()
        started = time.monotonic()
        server.push_model(MODEL_NAME, files.safetensors, MODEL_VERSION)
        blobs = server.model_blobs(files.sha256)
        if not blobs:
            raise RuntimeError(f"pushed, but no blob {files.sha256[:12]} under {server.data_dir}")
        log(f"{server_name}: pushed {files.safetensors.name} in {time.monotonic() - started:.1f}s")
        yield server, blobs
    finally:
        server.stop()


@contextmanager
def stratus_target(files: ModelFiles, args: Any) -> Iterator[ModelTarget]:
    name = "model-cold"
    with stratus_server(files, "stratus-models") as (server, blobs):
        started = time.monotonic()
        server.deploy(*HANDLER, name, stratus_flags(0, 4))  # decrypts the weights
        deploy_s = time.monotonic() - started
        decrypted = server.metric("stratus_decrypted_bytes_total")
        decrypt_s = server.metric("stratus_decrypt_seconds_total")
        log(f"stratus: deploy {deploy_s:.2f}s, of which decrypting {decrypted / 2**30:.2f} GiB "
            f"{decrypt_s:.2f}s ({decrypted / decrypt_s / 1e9 if decrypt_s else 0:.2f} GB/s)")
        copies = server.model_copies(files.sha256)  # what replicas map: the decrypted copy
        if not copies:
            raise RuntimeError(f"deployed, but no decrypted copy of {files.sha256[:12]} found")
        log(f"stratus: replicas map {', '.join(map(str, copies))}")
        url, headers = server.invoke_url(name), server.auth_headers()
        yield ModelTarget(
            name="stratus",
            files=copies,
            also_dropped=blobs,  # sealed: not read by a start, dropped so nothing of it is cached
            invoke=lambda timeout: post_json(url, headers, {}, timeout),
            wait_for_zero=lambda: server.wait_for_replicas(name, no_replicas),
            server_pid=server.pid,
            meta={"blobs": [str(b) for b in blobs], "copies": [str(c) for c in copies],
                  "plaintext": PLAINTEXT or "default", "deploy_flags": stratus_flags(0, 4),
                  "decrypt": {"bytes": decrypted, "seconds": decrypt_s, "deploy_s": deploy_s}},
        )


def run_process(files: ModelFiles, timeout: float) -> Invocation:
    """Spawn, read its one JSON line, reap with ``wait4`` for its rusage (``ru_inblock`` is
    ``read_bytes >> 9``)."""
    cmd = [str(MAIN_VENV / "bin" / "python"), "-c", PROCESS_SCRIPT, str(files.pt)]
    with tempfile.TemporaryFile() as stderr:
        started = time.perf_counter()
        popen = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=stderr, env={**os.environ, **PROCESS_ENV}
        )
        timer = threading.Timer(timeout, popen.kill)
        timer.start()
        assert popen.stdout is not None
        out = popen.stdout.read()
        _, status, usage = os.wait4(popen.pid, 0)
        elapsed = time.perf_counter() - started
        timer.cancel()
        popen.stdout.close()
        popen.returncode = os.waitstatus_to_exitcode(status)
        if popen.returncode != 0:
            stderr.seek(0)
            raise RuntimeError(f"process exited {popen.returncode}: {stderr.read()[-2000:].decode()}")
    return Invocation(elapsed, json.loads(out.splitlines()[-1]), usage.ru_inblock * 512)


@contextmanager
def process_target(files: ModelFiles, args: Any) -> Iterator[ModelTarget]:
    yield ModelTarget(
        name="process",
        files=[files.pt],
        invoke=lambda timeout: run_process(files, timeout),
        idle_before=False,
        meta={"python": str(MAIN_VENV / "bin" / "python"), "env": PROCESS_ENV},
    )


def ray_env(files: ModelFiles, metrics_interval_s: float, replicas: int) -> dict[str, str]:
    cpus = 1.0 if replicas <= 1 else min(1.0, (os.cpu_count() or 1) / replicas)
    return {
        **ray_metrics_env(metrics_interval_s),
        "BENCH_MODEL_PT": str(files.pt),
        "BENCH_RAY_REPLICAS": str(replicas),
        "BENCH_RAY_REPLICA_CPUS": f"{cpus:g}",
    }


@contextmanager
def ray_peer(files: ModelFiles, metrics_interval_s: float, replicas: int) -> Iterator[RayPeer]:
    ensure_ray_venv()
    peer = RayPeer("ray_model.py", f"ray-models-{replicas}", env=ray_env(files, metrics_interval_s, replicas))
    try:
        peer.start(timeout=600)
        yield peer
    finally:
        peer.stop()


@contextmanager
def ray_target(files: ModelFiles, args: Any) -> Iterator[ModelTarget]:
    with ray_peer(files, args.ray_metrics_interval, 0) as peer:
        yield ModelTarget(
            name="ray",
            files=[files.pt],
            invoke=lambda timeout: post_json(peer.url, {}, {}, timeout),
            wait_for_zero=peer.wait_for_zero_replicas,
            meta={"ray_version": peer.ray_version, "env": ray_env(files, args.ray_metrics_interval, 0)},
        )


TARGETS = {"stratus": stratus_target, "process": process_target, "ray": ray_target}


# --------------------------------------------------------------------------- memory


def touch_replicas(url: str, headers: dict[str, str], replicas: int, timeout: float) -> list[Invocation]:
    """Rounds of ``replicas`` concurrent requests that hold 0.5 s first (so they spread),
    until every replica has answered at least once; one answer per replica pid."""
    seen: dict[int, Invocation] = {}
    with ThreadPoolExecutor(replicas) as pool:
        for _ in range(20):
            jobs = [pool.submit(post_json, url, headers, {"hold_s": 0.5}, timeout) for _ in range(replicas)]
            for job in jobs:
                answer = job.result()
                seen.setdefault(int(answer.body["pid"]), answer)
            if len(seen) >= replicas:
                break
    if len(seen) < replicas:
        log(f"WARNING: only {len(seen)} of {replicas} replicas answered after 20 rounds")
    return list(seen.values())


def pss_summary(pids: Sequence[int]) -> dict[str, Any]:
    """Summed ``smaps_rollup`` of ``pids`` in GiB (PSS split into anon/file/shmem), plus each."""
    rollups = {}
    for pid in pids:
        try:
            rollups[pid] = smaps_rollup_kib(pid)
        except OSError:  # exited in the meantime (Ray's short-lived helpers)
            continue
    total = {
        key: sum(r.get(key, 0) for r in rollups.values()) / 2**20
        for key in ("Pss", "Pss_Anon", "Pss_File", "Pss_Shmem", "Rss")
    }
    return {
        "count": len(rollups),
        **{f"{key.lower()}_gib": value for key, value in total.items()},
        "processes": [
            {"pid": pid, "cmdline": cmdline(pid)[:120], "pss_gib": r.get("Pss", 0) / 2**20}
            for pid, r in rollups.items()
        ],
    }


def stratus_memory(files: ModelFiles, replicas: int, timeout: float) -> dict[str, Any]:
    name = f"model-mem{replicas}"
    with stratus_server(files, f"stratus-mem{replicas}") as (server, blobs):
        server.deploy(*HANDLER, name, stratus_flags(replicas, replicas))
        answers = touch_replicas(server.invoke_url(name), server.auth_headers(), replicas, timeout)
        pids = server.replica_pids(name)
        answered = {int(a.body["pid"]) for a in answers}
        if answered != set(pids):
            log(f"WARNING: replica pids from the API {sorted(pids)} != answering pids {sorted(answered)}")
        time.sleep(0.5)  # let the last answers settle
        replicas_pss, server_pss = pss_summary(pids), pss_summary([server.pid])
        copies = server.model_copies(files.sha256)
        # A copy in /dev/shm is memory whether or not it is mapped: what the PSS of the server
        # and replicas does not hold of it is added (a copy on disk is page cache: its mapped
        # pages are in their PSS, the rest the kernel reclaims).
        tmpfs = sum(c.stat().st_blocks * 512 for c in copies if c.is_relative_to("/dev/shm")) / 2**30
        outside = max(0.0, tmpfs - replicas_pss["pss_shmem_gib"] - server_pss["pss_shmem_gib"])
        return {
            "system": "stratus",
            "replicas": replicas_pss,
            "zygotes": pss_summary(server.zygote_pids()),
            "server": server_pss,
            "copies": [str(c) for c in copies],
            "tmpfs_gib": tmpfs,
            "tmpfs_outside_pss_gib": outside,
            "total_gib": replicas_pss["pss_gib"] + server_pss["pss_gib"] + outside,
            "copy_resident": [resident_fraction(c) for c in copies],
            "sealed_resident": [resident_fraction(b) for b in blobs],
            "checksums": sorted({a.body["checksum"] for a in answers}),
        }


def ray_memory(files: ModelFiles, replicas: int, metrics_interval_s: float, timeout: float) -> dict[str, Any]:
    with ray_peer(files, metrics_interval_s, replicas) as peer:
        answers = touch_replicas(peer.url, {}, replicas, timeout)
        pids = sorted({int(a.body["pid"]) for a in answers})
        tree = descendants(peer.pid)
        by_title = sorted(pid for pid in tree if "ServeReplica" in cmdline(pid))
        if by_title != pids:
            log(f"WARNING: ServeReplica processes {by_title} != answering pids {pids}")
        replicas_pss = pss_summary(pids)
        other = pss_summary([peer.pid, *(pid for pid in tree if pid not in pids)])
        return {
            "system": "ray",
            "replicas": replicas_pss,
            "ray_other": other,
            "total_gib": replicas_pss["pss_gib"] + other["pss_gib"],
            "replica_cpus": ray_env(files, metrics_interval_s, replicas)["BENCH_RAY_REPLICA_CPUS"],
            "checksums": sorted({a.body["checksum"] for a in answers}),
        }
