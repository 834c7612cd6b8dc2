"""Where decrypted artifacts live while the server runs: a private directory on the data disk
(``<data-dir>/run/plain``, the default) or in memory (``/dev/shm``), emptied at start.

Replicas memory-map weights from here, so the replicas of a host share one plaintext copy
through the page cache. On disk, that page cache is the kernel's to reclaim like any file's,
and the copy costs no memory while nothing maps it; in memory (``artifacts.plaintext:
memory``) the copy is tmpfs pages, which cannot be reclaimed, but no plaintext is ever
written to a disk. The server keeps each in-memory blob mapped itself: tmpfs pages are always
dirty, and a page that a replica alone mapped would count as memory it wrote (its memory
limit's measure); with the server as a second sharer, it counts as shared. A copy on disk is
written back before it is published, so its pages are clean by the time a replica maps them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import mmap
import os
import shutil
import stat
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

log = logging.getLogger("stratus.artifacts")

SHM = Path("/dev/shm")
MARKER = ".verified"  # beside each blob: what it was verified as (store/integrity.py)
# Plaintext is written 4 MiB at a time, at offsets that are multiples of it: the page cache
# then holds a copy on disk in 2 MiB folios, which a replica's mapping maps whole, one page
# fault each. A 1 GiB model's first forward pass took 618-647 faults (4-5 ms of system
# time) so, 1,189 (8 ms) with the 1 MiB folios of 1 MiB writes, and 16,490 (70-85 ms) from
# tmpfs, whose pages are 4 KiB (bench/model_faults.py; docs/benchmarks.md, section 4).
WRITE_BATCH = 4 << 20


class ArtifactsConfig(BaseModel):
    """The config file's ``artifacts`` section."""

    model_config = ConfigDict(extra="forbid")

    # Where replicas read decrypted blobs from: "disk" (the data dir's file system, page
    # cache) or "memory" (tmpfs: no plaintext on any disk, at the price of unreclaimable RAM).
    plaintext: Literal["disk", "memory"] = "disk"


def artifacts_config(section: Mapping[str, Any]) -> ArtifactsConfig:
    """Validate the config file's ``artifacts`` section; ValueError names what is wrong."""
    try:
        return ArtifactsConfig.model_validate(dict(section))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'artifacts'}: {e['msg']}"
                             for e in exc.errors())
        raise ValueError(f"artifacts: {problems}") from None


def cache_root(data_dir: Path, where: str = "disk", shm: Path = SHM) -> Path:
    """The cache of the server on ``data_dir``: ``<data-dir>/run/plain`` on disk; in memory,
    ``/dev/shm/stratus-<uid>/<data dir id>``, or the disk's when the host has no ``/dev/shm``
    (which the server warns about)."""
    if where == "memory" and shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
        tag = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
        return shm / f"stratus-{os.getuid()}" / tag
    return data_dir / "run" / "plain"


def _write_all(fd: int, buffers: list[bytes]) -> None:
    """One ``writev`` for the whole batch (again for what a short write left)."""
    views = [memoryview(buffer) for buffer in buffers if buffer]
    while views:
        written = os.writev(fd, views)
        while views and written >= len(views[0]):
            written -= len(views.pop(0))
        if views:
            views[0] = views[0][written:]


def forget_pages(path: Path) -> None:
    """Drop a file's clean pages from the page cache: those of a file nothing reads soon."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _private_dir(path: Path) -> None:
    """Create ``path`` (mode 0700) or accept it only if it is a real directory of ours that
    nobody else can enter: /dev/shm is shared by every user of the host."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise ValueError(f"{path} is not a directory owned by this user; remove it")
    if info.st_mode & 0o067:  # search by a group is the replicas' (backends/isolation.py)
        os.chmod(path, stat.S_IMODE(info.st_mode) & 0o710)


class PlainCache:
    """Decrypted blobs (``blobs/<sha256>``), unpacked code bundles (``bundles/<sha256>``) and
    model directories (``models/<key>``, links to the blobs under their file names)."""

    def __init__(self, root: Path, wanted: str = "disk") -> None:
        self.root = root
        self.wanted = wanted  # artifacts.plaintext, to say so when memory is not to be had
        self.blobs = root / "blobs"
        self.bundles = root / "bundles"
        self.models = root / "models"
        self.tmp = root / "tmp"
        self._held: dict[str, mmap.mmap] = {}
        self._pins: Counter[str] = Counter()  # digests a running job reads: never dropped

    @property
    def in_memory(self) -> bool:
        return self.root.is_relative_to(SHM)

    def open(self, keep: bool = False) -> None:
        """Start empty: what a server that did not stop cleanly left is removed (plaintext it
        no longer vouches for, and on disk). ``keep``: a takeover, whose adopted replicas
        still read what the version before it laid out (``ArtifactStore`` reuses it)."""
        self.root.parent.mkdir(parents=True, exist_ok=True)
        if self.root.parent.parent == SHM:
            _private_dir(self.root.parent)
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)
        _private_dir(self.root)
        for directory in (self.blobs, self.bundles, self.models, self.tmp):
            directory.mkdir(mode=0o700, exist_ok=keep)
        if self.wanted == "memory" and not self.in_memory:
            log.warning("decrypted artifacts are kept in %s while the server runs: on disk, "
                        "not in memory (artifacts.plaintext is memory, but /dev/shm is "
                        "missing)", self.root)

    def close(self) -> None:
        for name in list(self._held):
            self.release(name)
        shutil.rmtree(self.root, ignore_errors=True)
        if self.in_memory:
            with contextlib.suppress(OSError):  # the per-user directory, once no server uses it
                self.root.parent.rmdir()

    def blob_path(self, digest: str) -> Path:
        return self.blobs / digest

    def hold(self, digest: str) -> None:
        """Map a decrypted blob into the server, every page present (see the module's doc)."""
        if not self.in_memory or digest in self._held:
            return
        with open(self.blob_path(digest), "rb") as handle:
            if os.fstat(handle.fileno()).st_size == 0:
                return
            populate = getattr(mmap, "MAP_POPULATE", 0)
            self._held[digest] = mmap.mmap(handle.fileno(), 0, flags=mmap.MAP_SHARED | populate,
                                           prot=mmap.PROT_READ)

    def release(self, digest: str) -> None:
        held = self._held.pop(digest, None)
        if held is not None:
            held.close()

    def sizes(self) -> dict[str, int]:
        """Each decrypted blob's allocated bytes, wherever the cache is."""
        sizes: dict[str, int] = {}
        with contextlib.suppress(FileNotFoundError), os.scandir(self.blobs) as entries:
            for entry in entries:
                if not entry.name.endswith(MARKER):
                    with contextlib.suppress(FileNotFoundError):
                        sizes[entry.name] = entry.stat(follow_symlinks=False).st_blocks * 512
        return sizes

    def resident(self) -> dict[str, int]:
        """The decrypted blobs that are memory the kernel cannot reclaim (tmpfs pages), with
        their bytes; none when the cache is on disk, where they are page cache."""
        return self.sizes() if self.in_memory else {}

    def write(self, digest: str, pieces: Iterable[bytes], check: Callable[[int], None],
              ) -> tuple[int, float]:
        """Write a blob's plaintext (read-only), published under its digest once whole and
        once ``check`` accepts its length; its length, and the seconds spent waiting for the
        disk."""
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp, prefix="blob-")
        synced = 0.0
        try:
            length, batch, batched = 0, [], 0
            try:
                for piece in pieces:
                    length += len(piece)
                    batch.append(piece)
                    batched += len(piece)
                    if batched >= WRITE_BATCH:
                        _write_all(fd, batch)
                        batch, batched = [], 0
                _write_all(fd, batch)
                if not self.in_memory:
                    # Written back before any replica maps it: a dirty page-cache page counts
                    # as memory its lone mapper wrote (its limit's measure), and only a clean
                    # one can be evicted and read again from the disk.
                    waited = time.perf_counter()
                    os.fdatasync(fd)
                    synced = time.perf_counter() - waited
            finally:
                os.close(fd)
            check(length)
            os.chmod(tmp_name, 0o400)
            os.replace(tmp_name, self.blob_path(digest))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
        return length, synced

    def model_dir(self, files: Mapping[str, Mapping[str, Any]]) -> Path:
        """A directory of links to a model version's blobs under their own file names (what
        transformers and onnxruntime expect); the paths are checked by the caller."""
        key = hashlib.sha256(json.dumps(
            {path: entry["sha256"] for path, entry in files.items()}, sort_keys=True
        ).encode()).hexdigest()[:32]
        target = self.models / key
        if target.is_dir():
            return target
        staging = Path(tempfile.mkdtemp(dir=self.tmp, prefix="model-"))
        try:
            for relative, entry in files.items():
                link = staging / relative
                link.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(self.blob_path(entry["sha256"]), link)
            try:
                os.replace(staging, target)
            except OSError:
                if not target.is_dir():
                    raise
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return target

    def pin(self, digests: Iterable[str]) -> None:
        self._pins.update(digests)

    def unpin(self, digests: Iterable[str]) -> None:
        self._pins.subtract(digests)
        self._pins += Counter()  # drops the counts that reached zero

    def pinned(self, digest: str) -> bool:
        return self._pins[digest] > 0
