"""Where decrypted artifacts live while the server runs: a private directory in memory
(``/dev/shm``), outside the data dir, removed when the server stops.

Replicas memory-map weights from here, so the replicas of a host share one plaintext copy
through the page cache (a tmpfs file is its own page cache), while the data dir holds only
ciphertext. The server keeps each decrypted blob mapped itself: tmpfs pages are always dirty,
and a page that a replica alone mapped would count as memory it wrote (its memory limit's
measure); with the server as a second sharer, it counts as shared, like a disk file's.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import mmap
import os
import shutil
import stat
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("stratus.artifacts")

SHM = Path("/dev/shm")


def cache_root(data_dir: Path, shm: Path = SHM) -> Path:
    """The cache of the server on ``data_dir``: ``/dev/shm/stratus-<uid>/<data dir id>``, or,
    on a host without ``/dev/shm``, ``<data-dir>/run/plain`` (on disk, which docs/security.md
    warns about)."""
    if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
        tag = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
        return shm / f"stratus-{os.getuid()}" / tag
    return data_dir / "run" / "plain"


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

    def __init__(self, root: Path) -> None:
        self.root = root
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
        """Start empty: what a server that did not stop cleanly left is stale. ``keep``: a
        takeover, whose adopted replicas still read what the version before it laid out."""
        self.root.parent.mkdir(parents=True, exist_ok=True)
        if self.root.parent.parent == SHM:
            _private_dir(self.root.parent)
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)
        _private_dir(self.root)
        for directory in (self.blobs, self.bundles, self.models, self.tmp):
            directory.mkdir(mode=0o700, exist_ok=keep)
        if not self.in_memory:
            log.warning("decrypted artifacts are kept in %s while the server runs: on disk, "
                        "not in memory (/dev/shm is missing)", self.root)

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

    def resident(self) -> dict[str, int]:
        """Each decrypted blob's bytes in memory (its tmpfs pages); none when on disk."""
        if not self.in_memory:
            return {}
        sizes: dict[str, int] = {}
        with contextlib.suppress(FileNotFoundError), os.scandir(self.blobs) as entries:
            for entry in entries:
                if not entry.name.endswith(".verified"):
                    with contextlib.suppress(FileNotFoundError):
                        sizes[entry.name] = entry.stat(follow_symlinks=False).st_blocks * 512
        return sizes

    def pin(self, digests: Iterable[str]) -> None:
        self._pins.update(digests)

    def unpin(self, digests: Iterable[str]) -> None:
        self._pins.subtract(digests)
        self._pins += Counter()  # drops the counts that reached zero

    def pinned(self, digest: str) -> bool:
        return self._pins[digest] > 0
