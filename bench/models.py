"""Big models: cold start of a 1 GiB model and replica memory, Stratus vs a process vs Ray Serve.

    .venv/bin/python bench/models.py [--size-gib 1] [--runs 5] [--only stratus,process,ray] [--json]

The model is N float32 4096x4096 matrices (16 for 1 GiB, ``bench/modelkit.py``); every target
runs the same forward pass over all of them. Targets:

* stratus: weights pushed to the model store, handler ``bench/handlers/model_forward.py``
  loads them with ``ctx.load_model`` (memory-mapped), min 0 replicas, zero after ~1 s;
* process: a fresh ``.venv/bin/python -c`` that imports torch, ``torch.load``s ``weights.pt``
  and runs the forward pass (the whole subprocess is timed);
* ray: Ray Serve 2.60 (``bench/peers/ray_model.py``), ``torch.load`` in the constructor,
  autoscaling from zero with metrics every 0.5 s as in ``bench/coldstart.py``.

Phases (``--phases``): ``warm`` (the weight file a start reads is read once before each
timed run: for Stratus, the decrypted copy replicas map), ``cold`` (it is dropped from the
page cache: fsync + POSIX_FADV_DONTNEED, and Stratus's sealed blob too; the disk's reads over
the request, from ``/proc/diskstats``, give its bandwidth), ``memory`` (total PSS of 1 and 4
replicas that each served a request, with the server's and any tmpfs copy's; Stratus and Ray
only). Each run records the load average beside it, and Stratus's handler the instants that
split a cold start into its steps. One untimed warm-up cold start per target comes first.
``BENCH_STRATUS_PLAINTEXT=memory`` runs Stratus with its decrypted copies in ``/dev/shm``.
Results: ``bench/results/models-<ts>.json`` and a markdown table (on stderr with ``--json``,
which prints the JSON on stdout).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from typing import Any

from common import (
    log,
    machine_info,
    markdown_table,
    parse_only,
    percentile,
    publish,
    timestamp,
)
from model_targets import TARGETS, Invocation, ModelTarget, ray_memory, stratus_memory
from modelkit import (
    ModelFiles,
    drop_from_cache,
    ensure_weights,
    read_bandwidth,
    resident_fraction,
    warm_cache,
)
from procfs import disk_sectors_read, io_read_bytes

PHASES = ("warm", "cold", "memory")
STEPS = ("to_init_s", "init_s", "to_call_s", "call_s", "reply_s")
CHECKSUM_TOLERANCE = 1e-3
CONFIG_KEYS = ("size_gib", "runs", "warmup_runs", "settle", "jitter", "timeout", "ray_metrics_interval")


def steps(answer: Invocation) -> dict[str, float]:
    """Where a cold start's time went, from the handler's instants (``CLOCK_MONOTONIC``, as the
    harness's): request sent to ``__init__`` entered (the server's start decision, the sandbox,
    the fork and the replica's entry into its sandbox), ``load`` (``__init__``: the model mapped),
    ``__init__`` ended to the call (the hello, the replica marked ready, the request
    dispatched), ``forward``, and the answer's way back. Empty for a target without them."""
    body = answer.body
    if not answer.sent_at or "init_at" not in body or body.get("calls") != 1:
        return {}
    return {
        "to_init_s": body["init_at"] - answer.sent_at,
        "init_s": body["init_end_at"] - body["init_at"],
        "to_call_s": body["called_at"] - body["init_end_at"],
        "call_s": body["returned_at"] - body["called_at"],
        "reply_s": answer.answered_at - body["returned_at"],
    }


def timed_run(target: ModelTarget, cache: str, files: ModelFiles, args: argparse.Namespace) -> dict[str, Any]:
    waited = target.wait_for_zero()
    for path in target.files:  # after zero replicas: nobody maps the file any more
        if cache == "cold":
            drop_from_cache(path)
        else:
            warm_cache(path)
    if cache == "cold":
        for path in target.also_dropped:
            drop_from_cache(path)
    idle_s = args.settle + random.uniform(0.0, args.jitter) if target.idle_before else 0.0
    time.sleep(idle_s)
    resident = min(resident_fraction(path) for path in target.files)
    disk_before = disk_sectors_read(target.files[0])
    server_before = io_read_bytes(target.server_pid) if target.server_pid else None
    answer = target.invoke(args.timeout)
    disk_after = disk_sectors_read(target.files[0])
    server_after = io_read_bytes(target.server_pid) if target.server_pid else None
    body = answer.body
    if abs(float(body["checksum"]) - files.checksum) > CHECKSUM_TOLERANCE:
        log(f"WARNING {target.name}: checksum {body['checksum']} != expected {files.checksum}")
    return {
        "seconds": answer.seconds,
        "resident_before": resident,
        "read_bytes": answer.read_bytes,
        # The whole disk's reads over the request (the server's read-ahead included; any other
        # reader on the machine too, which the load average beside the figures hints at).
        "disk_read_bytes": (disk_after - disk_before) * 512
        if disk_before is not None and disk_after is not None else None,
        "server_read_bytes": server_after - server_before
        if server_before is not None and server_after is not None else None,
        "cold_header": answer.cold_header,
        "waited_for_zero_s": waited,
        "idle_before_request_s": idle_s,
        "loadavg": os.getloadavg()[0],
        **steps(answer),
        **{
            k: body.get(k) for k in ("checksum", "pid", "threads", "import_s", "load_s", "forward_s", "calls")
        },
    }


def summarise(runs: list[dict[str, Any]], files: ModelFiles) -> dict[str, Any]:
    def median(key: str) -> float | None:
        values = [r[key] for r in runs if r.get(key) is not None]
        return percentile(values, 50) if values else None

    seconds = [r["seconds"] for r in runs]
    size = files.weight_bytes
    read, load, forward = median("read_bytes"), median("load_s"), median("forward_s")
    disk = median("disk_read_bytes")
    window = (load or 0.0) + (forward or 0.0)  # loading + forward: where the weights are read
    return {
        "median_s": percentile(seconds, 50),
        "min_s": min(seconds),
        "max_s": max(seconds),
        "median_load_s": load,
        "median_forward_s": forward,
        "median_read_mib": read / 2**20 if read is not None else None,
        "median_disk_read_mib": disk / 2**20 if disk is not None else None,
        # The disk's bandwidth over the cold start: bytes the device read / zero to answer.
        "disk_over_time_gbps": disk / percentile(seconds, 50) / 1e9 if disk is not None else None,
        "size_over_time_gbps": size / percentile(seconds, 50) / 1e9,
        "read_over_time_gbps": read / percentile(seconds, 50) / 1e9 if read is not None else None,
        "read_over_load_gbps": read / window / 1e9 if read is not None and window > 0 else None,
        "max_resident_before": max(r["resident_before"] for r in runs),
        "not_cold_runs": sum(1 for r in runs if r["cold_header"] is False),
        "threads": sorted({r["threads"] for r in runs if r.get("threads") is not None}),
        "steps": {key: median(key) for key in STEPS if median(key) is not None},
        "loadavg": [r["loadavg"] for r in runs],
    }


def bench_coldstart(name: str, files: ModelFiles, args: argparse.Namespace) -> list[dict[str, Any]]:
    out = []
    with TARGETS[name](files, args) as target:
        for i in range(args.warmup_runs):
            run = timed_run(target, "warm", files, args)
            log(f"{name}: warm-up run {i + 1}: {run['seconds']:.3f}s (discarded)")
        for cache in (c for c in ("warm", "cold") if c in args.phases):
            runs = []
            for i in range(args.runs):
                run = timed_run(target, cache, files, args)
                read = f", read {run['read_bytes'] / 2**20:.0f} MiB" if run["read_bytes"] is not None else ""
                if run["disk_read_bytes"] is not None:
                    read += f" (the disk: {run['disk_read_bytes'] / 2**20:.0f} MiB)"
                parts = " ".join(f"{key[:-2]} {run[key] * 1000:.0f}" for key in STEPS if key in run)
                log(f"{name} [{cache} cache] run {i + 1}/{args.runs}: {run['seconds']:.3f}s{read}"
                    f"{f'; ms: {parts}' if parts else ''}; load {run['loadavg']:.2f}")
                runs.append(run)
            out.append(
                {"system": name, "cache": cache, "runs": runs, **summarise(runs, files), "meta": target.meta}
            )
    return out


def bench_memory(name: str, files: ModelFiles, args: argparse.Namespace) -> list[dict[str, Any]]:
    out = []
    for replicas in args.memory_replicas:
        if name == "stratus":
            result = stratus_memory(files, replicas, args.timeout)
        else:
            result = ray_memory(files, replicas, args.ray_metrics_interval, args.timeout)
        log(f"{name}: {replicas} replica(s): PSS {result['replicas']['pss_gib']:.3f} GiB, with the "
            f"server (and tmpfs) {result['total_gib']:.3f} GiB")
        out.append({"n": replicas, **result})
    return out


def render(
    cold: list[dict[str, Any]],
    memory: list[dict[str, Any]],
    reference: dict[str, float],
    failures: dict[str, str],
) -> str:
    lines = []
    if cold:
        headers = [
            "system",
            "cache",
            "runs",
            "median s",
            "min s",
            "max s",
            "load s",
            "forward s",
            "read MiB",
            "disk read MiB",
            "disk GB/s",
            "size/time GB/s",
            "read/(load+fwd) GB/s",
            "threads",
            "load avg",
        ]
        keys = ("median_s", "min_s", "max_s", "median_load_s", "median_forward_s", "median_read_mib",
                "median_disk_read_mib")
        # Only meaningful from disk: the device's bytes over the time, the model's, the reader's.
        bandwidth = ("disk_over_time_gbps", "size_over_time_gbps", "read_over_load_gbps")
        rows = [
            [s["system"], s["cache"], len(s["runs"]), *(s[k] for k in keys)]
            + [s[k] if s["cache"] == "cold" else None for k in bandwidth]
            + [",".join(map(str, s["threads"])), " ".join(f"{v:.1f}" for v in s["loadavg"])]
            for s in cold
        ]
        lines += ["Cold start, zero replicas to first response:", "", markdown_table(headers, rows), ""]
        timed = [s for s in cold if s["steps"]]
        if timed:
            step_headers = ["system", "cache", "sent to __init__ ms", "__init__ (load) ms",
                            "__init__ to call ms", "call (forward) ms", "answer back ms"]
            step_rows = [[s["system"], s["cache"], *(s["steps"].get(k, 0.0) * 1000 for k in STEPS)]
                         for s in timed]
            lines += ["Where a cold start's time went (medians of each step):", "",
                      markdown_table(step_headers, step_rows), ""]
        by_key = {(s["system"], s["cache"]): s["median_s"] for s in cold}
        for (system, cache), median in by_key.items():
            if system != "stratus" and ("stratus", cache) in by_key:
                ratio = median / by_key[("stratus", cache)]
                lines.append(f"- {cache} cache: {system} median / stratus median = {ratio:.1f}x")
        decrypt = next((s["meta"]["decrypt"] for s in cold if "decrypt" in s.get("meta", {})), None)
        if decrypt and decrypt["seconds"]:
            lines.append(
                f"- stratus decrypts the sealed weights once per plaintext copy, at deploy: "
                f"{decrypt['bytes'] / 2**30:.2f} GiB in {decrypt['seconds']:.2f} s "
                f"({decrypt['bytes'] / decrypt['seconds'] / 1e9:.2f} GB/s; the deploy call took "
                f"{decrypt['deploy_s']:.2f} s). A start after the copy was dropped (the memory "
                f"budget's eviction, a deleted revision) pays it again, on top of the times above.")
    if memory:
        headers = [
            "system",
            "replicas",
            "replicas PSS GiB",
            "per replica",
            "anon GiB",
            "file GiB",
            "shmem GiB",
            "server (Ray: the rest) GiB",
            "tmpfs outside PSS GiB",
            "total GiB",
            "zygotes (n) GiB",
        ]
        rows = []
        for m in memory:
            rep = m["replicas"]
            zyg = m.get("zygotes")
            rest = m.get("server") or m.get("ray_other")
            rows.append(
                [
                    m["system"],
                    m["n"],
                    rep["pss_gib"],
                    rep["pss_gib"] / max(1, rep["count"]),
                    rep["pss_anon_gib"],
                    rep["pss_file_gib"],
                    rep["pss_shmem_gib"],
                    rest["pss_gib"] if rest else None,
                    m.get("tmpfs_outside_pss_gib", 0.0),
                    m.get("total_gib"),
                    f"({zyg['count']}) {zyg['pss_gib']:.3f}" if zyg else None,
                ]
            )
        lines += ["", "Memory (PSS, each replica served one request; total: server and replicas, "
                  "and any tmpfs copy beyond what their PSS holds; zygotes apart):", "",
                  markdown_table(headers, rows)]
    if reference:
        lines.append(
            "\nReference: sequential read() of weights.pt: "
            f"{reference['disk_read_gbps']:.2f} GB/s from disk, "
            f"{reference['cached_read_gbps']:.2f} GB/s from the page cache"
        )
    lines += [f"- {name} FAILED: {error.splitlines()[0]}" for name, error in failures.items()]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--size-gib", type=float, default=1.0, help="model size (16 matrices per GiB)")
    parser.add_argument("--runs", type=int, default=5, help="timed cold starts per target and cache state")
    parser.add_argument("--warmup-runs", type=int, default=1, help="untimed cold starts first")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds idle after zero replicas")
    parser.add_argument("--jitter", type=float, default=1.0, help="random extra idle, 0..N s")
    parser.add_argument("--timeout", type=float, default=300.0, help="per-request timeout (s)")
    parser.add_argument("--ray-metrics-interval", type=float, default=0.5, help="Ray's metrics_interval_s")
    parser.add_argument("--memory-replicas", default="1,4", help="replica counts for the memory phase")
    parser.add_argument("--phases", default=",".join(PHASES), help="subset of " + ",".join(PHASES))
    parser.add_argument("--only", default=",".join(TARGETS), help="subset of " + ",".join(TARGETS))
    parser.add_argument("--json", action="store_true", help="print the JSON result on stdout")
    args = parser.parse_args()
    args.targets = parse_only(args.only, tuple(TARGETS))
    args.phases = parse_only(args.phases, PHASES)
    args.memory_replicas = [int(n) for n in args.memory_replicas.split(",") if n.strip()]
    return args


def main() -> int:
    args = parse_args()
    started = timestamp()
    files = ensure_weights(args.size_gib)
    reference = read_bandwidth(files.pt)
    log(
        f"weights.pt: {reference['disk_read_gbps']:.2f} GB/s from disk, "
        f"{reference['cached_read_gbps']:.2f} GB/s cached"
    )
    cold: list[dict[str, Any]] = []
    memory: list[dict[str, Any]] = []
    failures: dict[str, str] = {}
    for name in args.targets:
        try:  # one broken target must not hide the others' numbers
            if {"warm", "cold"} & set(args.phases):
                cold += bench_coldstart(name, files, args)
            if "memory" in args.phases and name != "process":
                memory += bench_memory(name, files, args)
        except Exception as exc:
            log(f"{name} FAILED: {exc}")
            failures[name] = f"{type(exc).__name__}: {exc}"
    payload = {
        "benchmark": "models",
        "started": started,
        "machine": machine_info() | {"read_bandwidth": reference},
        "model": files.describe(),
        "config": {k: getattr(args, k) for k in CONFIG_KEYS}
        | {"targets": args.targets, "phases": args.phases, "memory_replicas": args.memory_replicas},
        "coldstart": cold,
        "memory": memory,
        "failures": failures,
    }
    payload["markdown"] = table = render(cold, memory, reference, failures)
    publish("models", payload, table, args.json)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
