"""What a replica's first forward pass over a freshly mapped 1 GiB model pays in page faults,
by how its decrypted copy was written: on the data disk in writes of N bytes (the page cache
then holds it in folios of up to that size), or in tmpfs (4 KiB pages).

    .venv/bin/python bench/model_faults.py [--rounds 5] [--sizes 1048576,4194304] [--json]

Each round writes the benchmark model (``bench/modelkit.py``) once per variant, in the order
given, ``fdatasync``s it, and runs a fresh process that maps it as a replica does
(``stratus.models.loading.mmap_safetensors``) and runs the forward pass twice. It reports the
first pass's minor faults and system time (the kernel mapping the pages), both passes' user
time (the arithmetic), the mapping's ``FilePmdMapped`` and the write's seconds. Counts and
CPU times hardly depend on the machine's load; wall times do, so the load average is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import REPO_ROOT, RESULTS_DIR, log
from modelkit import ensure_weights

PROBE = r"""
import json, re, resource, sys, time
import torch
from stratus.models.loading import mmap_safetensors
torch.set_num_threads(1)
weights = mmap_safetensors(sys.argv[1])
def forward():
    x = torch.ones(1, 4096)
    with torch.inference_mode():
        for key in sorted(weights):
            x = torch.tanh(x @ weights[key])
    return float(x.sum())
marks = [(time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF))]
for _ in range(2):
    forward()
    marks.append((time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)))
(t0, u0), (t1, u1), (t2, u2) = marks
pmd = re.search(r"FilePmdMapped:\s+(\d+)", open("/proc/self/smaps_rollup").read())
print(json.dumps({"first_ms": (t1 - t0) * 1e3, "second_ms": (t2 - t1) * 1e3,
                  "faults": u1.ru_minflt - u0.ru_minflt, "sys_ms": (u1.ru_stime - u0.ru_stime) * 1e3,
                  "user_ms": (u1.ru_utime - u0.ru_utime) * 1e3,
                  "second_user_ms": (u2.ru_utime - u1.ru_utime) * 1e3,
                  "pmd_mib": int(pmd.group(1)) // 1024 if pmd else 0}))
"""


def write_copy(source: Path, target: Path, size: int) -> float:
    """Copy ``source`` in writes of ``size`` bytes (``writev`` of 1 MiB pieces above that, as
    the server writes); seconds taken before the ``fdatasync``."""
    piece = min(size, 1 << 20)
    started = time.perf_counter()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with open(source, "rb", buffering=0) as handle:
            batch: list[bytes] = []
            while chunk := handle.read(piece):
                batch.append(chunk)
                if len(batch) * piece >= size:
                    os.writev(fd, batch)
                    batch = []
            if batch:
                os.writev(fd, batch)
        took = time.perf_counter() - started
        os.fdatasync(fd)
    finally:
        os.close(fd)
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sizes", default=f"{1 << 20},{4 << 20}", help="write sizes on disk, bytes")
    parser.add_argument("--no-tmpfs", action="store_true", help="skip the /dev/shm variant")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    files = ensure_weights(1.0)
    variants = [(f"disk, {int(s) >> 10} KiB writes", RESULTS_DIR / "faults.bin", int(s))
                for s in args.sizes.split(",")]
    if not args.no_tmpfs and Path("/dev/shm").is_dir():
        variants.append(("tmpfs", Path("/dev/shm") / f"stratus-bench-faults-{os.getpid()}.bin", 4 << 20))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")) if p)}
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in variants}
    for round_ in range(args.rounds):
        for name, target, size in variants:
            written = write_copy(files.safetensors, target, size)
            try:
                probe = subprocess.run([sys.executable, "-c", PROBE, str(target)], env=env,
                                       capture_output=True, text=True, check=True)
            finally:
                target.unlink()
            row = {**json.loads(probe.stdout), "write_s": written, "loadavg": os.getloadavg()[0]}
            results[name].append(row)
            log(f"round {round_ + 1} {name}: {row['faults']} faults, {row['sys_ms']:.1f} ms system, "
                f"first pass {row['first_ms']:.0f} ms, second {row['second_ms']:.0f} ms, "
                f"load {row['loadavg']:.1f}")
    lines = ["| copy | faults | system ms | user ms (first, second) | first pass ms | second ms "
             "| PMD-mapped MiB | write s | load avg |", "|---|---|---|---|---|---|---|---|---|"]
    for name, rows in results.items():
        def med(key: str, rows: list[dict[str, float]] = rows) -> float:
            return statistics.median(row[key] for row in rows)
        loads = " ".join(f"{row['loadavg']:.1f}" for row in rows)
        lines.append(f"| {name} | {med('faults'):.0f} | {med('sys_ms'):.1f} | {med('user_ms'):.0f}, "
                     f"{med('second_user_ms'):.0f} | {med('first_ms'):.0f} | {med('second_ms'):.0f} | "
                     f"{med('pmd_mib'):.0f} | {med('write_s'):.2f} | {loads} |")
    table = "\n".join(lines)
    print(json.dumps(results, indent=1) if args.json else table)
    if args.json:
        print(table, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
