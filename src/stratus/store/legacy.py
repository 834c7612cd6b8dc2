"""Bringing a data dir from before encryption at rest up to date, at start-up: its plaintext
blobs sealed in place, its plaintext bundle and model directories removed."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from stratus.security.crypto import SEGMENT, Sealer, new_data_key
from stratus.store.artifacts import ArtifactStore
from stratus.store.integrity import sha256_file

log = logging.getLogger("stratus.artifacts")

_DIGEST = re.compile(r"[0-9a-f]{64}")


def _seal_file(store: ArtifactStore, digest: str, source: Path) -> None:
    data_key = new_data_key()
    sealer = Sealer(data_key, digest)
    fd, tmp_name = tempfile.mkstemp(dir=store.tmp, prefix="seal-")
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as plain:
            out.write(sealer.header)
            while chunk := plain.read(SEGMENT):
                out.write(sealer.update(chunk))
            out.write(sealer.finish())
            out.flush()
            os.fsync(out.fileno())
        store.publish(digest, tmp_name, data_key)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)


def seal_legacy(store: ArtifactStore) -> int:
    """Seal every blob that has no data key yet (each checked against its digest first; one
    that is not whole is left for the next check of it to remove). Returns how many."""
    for plaintext in (store.root / "bundles", store.root / "models"):
        shutil.rmtree(plaintext, ignore_errors=True)
    sealed = 0
    for path in store.blobs.glob("*/*"):
        if not _DIGEST.fullmatch(path.name) or store.key_path(path.name).exists():
            continue
        if sha256_file(str(path)) != path.name:
            continue
        _seal_file(store, path.name, path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}.verified")
        sealed += 1
    if sealed:
        log.warning("sealed %d plaintext blob(s) from before encryption at rest", sealed)
    return sealed
