"""The benchmark model for ``bench/models.py``: seeded weights on disk and page-cache control.

The model is ``n`` float32 matrices of ``DIM x DIM`` (64 MiB each, 16 per GiB), stored once
as ``weights.safetensors`` (pushed to the Stratus model store) and ``weights.pt`` (what
``torch.load(..., weights_only=True)`` reads for the process and Ray targets) under
``bench/results/model-<size>gib/``. Every target runs the same forward pass, which touches
every weight (keep the copies in ``bench/handlers/model_forward.py``,
``bench/peers/ray_model.py`` and ``PROCESS_SCRIPT`` identical)::

    x = torch.ones(1, DIM)
    for key in sorted(weights):
        x = torch.tanh(x @ weights[key])
    checksum = float(x.sum())
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from common import RESULTS_DIR, log

DIM = 4096
MATRIX_BYTES = DIM * DIM * 4  # float32: 64 MiB
SEED = 0
CHUNK = 16 << 20

# The `process` target: `python -c PROCESS_SCRIPT weights.pt`; prints one JSON line.
PROCESS_SCRIPT = """\
import json, os, sys, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
weights = torch.load(sys.argv[1], weights_only=True)
t2 = time.perf_counter()
x = torch.ones(1, next(iter(weights.values())).shape[0])
with torch.inference_mode():
    for key in sorted(weights):
        x = torch.tanh(x @ weights[key])
checksum = float(x.sum())
t3 = time.perf_counter()
print(json.dumps({"checksum": checksum, "pid": os.getpid(), "threads": torch.get_num_threads(),
                  "import_s": t1 - t0, "load_s": t2 - t1, "forward_s": t3 - t2}))
"""


@dataclass(frozen=True)
class ModelFiles:
    directory: Path
    safetensors: Path
    pt: Path
    matrices: int
    weight_bytes: int
    sha256: str  # of weights.safetensors: the store addresses blobs by it
    checksum: float  # the forward pass's result, computed when the weights were made

    def describe(self) -> dict[str, object]:
        return {
            "directory": str(self.directory),
            "matrices": self.matrices,
            "dim": DIM,
            "weight_bytes": self.weight_bytes,
            "safetensors_bytes": self.safetensors.stat().st_size,
            "pt_bytes": self.pt.stat().st_size,
            "expected_checksum": self.checksum,
        }


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_weights(size_gib: float) -> ModelFiles:
    """Generate (seeded) or reuse ``bench/results/model-<size>gib/``; ``meta.json`` is written
    last, so a half-written directory is regenerated."""
    matrices = max(1, round(size_gib * (1 << 30) / MATRIX_BYTES))
    directory = RESULTS_DIR / f"model-{size_gib:g}gib"
    meta_path = directory / "meta.json"
    safetensors_path, pt_path = directory / "weights.safetensors", directory / "weights.pt"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if meta.get("matrices") != matrices or not (safetensors_path.exists() and pt_path.exists()):
        meta = _generate(directory, matrices, safetensors_path, pt_path)
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    size = matrices * MATRIX_BYTES
    return ModelFiles(directory, safetensors_path, pt_path, matrices, size, meta["sha256"], meta["checksum"])


def _generate(directory: Path, matrices: int, safetensors_path: Path, pt_path: Path) -> dict[str, object]:
    import torch
    from safetensors.torch import save_file

    started = time.monotonic()
    log(f"generating {matrices} x {DIM}x{DIM} float32 weights (seed {SEED}) into {directory}")
    directory.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(SEED)
    weights = {
        f"w{i:03d}": torch.randn(DIM, DIM, generator=generator) / math.sqrt(DIM) for i in range(matrices)
    }
    x = torch.ones(1, DIM)
    with torch.inference_mode():
        for key in sorted(weights):
            x = torch.tanh(x @ weights[key])
    save_file(weights, str(safetensors_path))
    torch.save(weights, pt_path)
    del weights
    for path in (safetensors_path, pt_path):  # on disk for real before any cold-cache run
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    meta = {"matrices": matrices, "dim": DIM, "seed": SEED, "checksum": float(x.sum())}
    meta["sha256"] = sha256_file(safetensors_path)
    log(f"weights ready in {time.monotonic() - started:.1f}s")
    return meta


# --------------------------------------------------------------------------- page cache

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, *(ctypes.c_int,) * 3, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
PAGE = os.sysconf("SC_PAGE_SIZE")


def drop_from_cache(path: Path) -> None:
    """Evict the file's pages: ``fsync`` then ``POSIX_FADV_DONTNEED`` (pages some process
    still maps stay resident, which ``resident_fraction`` shows)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def warm_cache(path: Path) -> float:
    """Read the whole file once (into the page cache); returns seconds taken."""
    started = time.perf_counter()
    buffer = bytearray(CHUNK)
    with open(path, "rb", buffering=0) as handle:
        while handle.readinto(buffer):
            pass
    return time.perf_counter() - started


def resident_fraction(path: Path) -> float:
    """Share of the file's pages in the page cache (``mincore`` on a fresh mapping, which
    faults nothing in)."""
    size = path.stat().st_size
    if size == 0:
        return 1.0
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = _libc.mmap(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), f"mmap {path}")
        try:
            pages = (size + PAGE - 1) // PAGE
            vector = (ctypes.c_ubyte * pages)()
            if _libc.mincore(addr, size, vector) != 0:
                raise OSError(ctypes.get_errno(), f"mincore {path}")
            return (pages - bytes(vector).count(0)) / pages
        finally:
            _libc.munmap(addr, size)
    finally:
        os.close(fd)


def read_bandwidth(path: Path) -> dict[str, float]:
    """Reference numbers: sequential ``read()`` of the file from disk (after a drop) and
    from the page cache, in GB/s (10^9 bytes)."""
    size = path.stat().st_size
    drop_from_cache(path)
    cold_s = warm_cache(path)
    warm_s = warm_cache(path)
    return {"disk_read_gbps": size / cold_s / 1e9, "cached_read_gbps": size / warm_s / 1e9}
