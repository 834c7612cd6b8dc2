"""Content-addressed blobs on the local file system, and code bundles unpacked from them.

A blob lives at ``blobs/sha256/<ab>/<digest>``. Writes go to a temporary file that is
renamed into place only after its digest checks out, so a crash mid-upload leaves
nothing half-written and visible.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from stratus.errors import BadRequest, PayloadTooLarge
from stratus.store.integrity import CorruptBlob, verify_blob

CHUNK = 1 << 20


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.bundles = root / "bundles"
        self.models = root / "models"
        self.tmp = root / "tmp"
        for directory in (self.blobs, self.bundles, self.models, self.tmp):
            directory.mkdir(parents=True, exist_ok=True)

    def blob_path(self, digest: str) -> Path:
        return self.blobs / digest[:2] / digest

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def has_sound_blob(self, digest: str) -> bool:
        """Present and matching its digest. A corrupted blob is removed, so that uploading the
        same content again repairs it (and every version that shares it)."""
        path = self.blob_path(digest)
        if not path.is_file():
            return False
        try:
            verify_blob(str(path), digest, None, f"blob {digest[:12]}")
        except CorruptBlob:
            for stale in (path, Path(f"{path}.verified")):
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()
            return False
        return True

    async def write_blob(self, digest: str, chunks: AsyncIterator[bytes], max_bytes: int) -> int:
        """Stream a blob to disk, verify it against ``digest`` and publish it atomically."""
        hasher = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp, prefix="upload-")
        try:
            with os.fdopen(fd, "wb") as tmp:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise PayloadTooLarge(f"bundle exceeds the limit of {max_bytes} bytes")
                    hasher.update(chunk)
                    tmp.write(chunk)
                tmp.flush()
                os.fsync(tmp.fileno())
            actual = hasher.hexdigest()
            if actual != digest:
                raise BadRequest(f"upload digest mismatch: expected {digest}, got {actual}")
            target = self.blob_path(digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp_name, target)
            return size
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)  # still there only when the upload failed

    def verify_blob(self, digest: str) -> bool:
        hasher = hashlib.sha256()
        with open(self.blob_path(digest), "rb") as blob:
            while chunk := blob.read(CHUNK):
                hasher.update(chunk)
        return hasher.hexdigest() == digest

    def unpack_bundle(self, digest: str) -> Path:
        """Extract a code bundle (tar.gz) once, verified, into ``bundles/<digest>``."""
        target = self.bundles / digest
        if target.is_dir():
            return target
        if not self.has_blob(digest):
            raise BadRequest(f"bundle {digest} has not been uploaded")
        if not self.verify_blob(digest):
            raise BadRequest(f"bundle {digest} is corrupt: its content does not match its digest")
        staging = Path(tempfile.mkdtemp(dir=self.tmp, prefix="bundle-"))
        try:
            try:
                with tarfile.open(self.blob_path(digest), "r:gz") as archive:
                    # The "data" filter refuses absolute paths, links out of the tree and devices.
                    archive.extractall(staging, filter="data")
            except (tarfile.TarError, OSError) as exc:
                raise BadRequest(f"bundle {digest} is not a valid tar.gz archive: {exc}") from exc
            try:
                os.replace(staging, target)
            except OSError:
                if not target.is_dir():  # another request may have won the race
                    raise
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return target

    def model_dir(self, files: dict[str, dict[str, Any]]) -> Path:
        """A directory of symlinks to a model version's blobs under their own file names (what
        transformers and onnxruntime expect); the blobs stay the single copy on disk."""
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
                if ".." in Path(relative).parts or Path(relative).is_absolute():
                    raise BadRequest(f"model file path {relative!r} leaves its directory")
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

    def collect(self, referenced: set[str], grace_s: float) -> dict[str, int]:
        """Delete blobs nothing references (and older than ``grace_s``, so an upload whose
        version or deployment is being recorded right now survives), with what hangs off them."""
        removed = freed = 0
        cutoff = time.time() - grace_s
        for path in self.blobs.glob("*/*"):
            if path.name.endswith(".verified") or path.name in referenced:
                continue
            stat = path.stat()
            if stat.st_mtime > cutoff:
                continue
            path.unlink()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(str(path) + ".verified")
            removed += 1
            freed += stat.st_size
        for bundle in self.bundles.iterdir():
            if bundle.name not in referenced:
                shutil.rmtree(bundle, ignore_errors=True)
        for model in self.models.iterdir():
            links = [link for link in model.rglob("*") if link.is_symlink()]
            if any(not link.exists() for link in links):
                shutil.rmtree(model, ignore_errors=True)
        return {"blobs_removed": removed, "bytes_freed": freed}

