"""Blob integrity: a blob is hashed once and a marker beside it records what was verified;
later checks compare the marker with the file and hash again only when they differ."""

from __future__ import annotations

import hashlib
import json
import os

from stratus.errors import StratusError

CHUNK = 4 << 20


class CorruptBlob(StratusError):
    status = 500
    type = "corrupt_artifact"


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_blob(path: str, sha256: str, size: int | None, label: str) -> None:
    """Raise CorruptBlob unless the file at ``path`` has the digest ``sha256``.

    The marker records size and mtime when the blob was last hashed: any change since (a
    rewrite, a truncation, a repair in place) means hashing again.
    """
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise CorruptBlob(f"{label}: blob {sha256[:12]} is missing from the artifact store") from None
    stamp = {"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    marker = path + ".verified"
    try:
        with open(marker) as handle:
            if json.load(handle) == stamp:
                return
    except (FileNotFoundError, ValueError):
        pass
    actual = sha256_file(path) if size is None or stat.st_size == size else None
    if actual != sha256:
        found = f"sha256 {actual[:12]}" if actual else f"{stat.st_size} bytes, expected {size}"
        raise CorruptBlob(f"{label} is corrupted: blob {sha256[:12]} now has {found}; "
                          "push it again")
    temporary = f"{marker}.{os.getpid()}"
    with open(temporary, "w") as handle:
        json.dump(stamp, handle)
    os.replace(temporary, marker)
