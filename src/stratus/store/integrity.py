"""Blob integrity: a blob is checked once and a marker beside it records what was verified;
later checks compare the marker with the file and check again only when they differ."""

from __future__ import annotations

import hashlib
import json
import os

from stratus.errors import IntegrityError

CHUNK = 4 << 20


class CorruptBlob(IntegrityError):
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
    if is_marked(path, sha256, label):
        return
    stat = os.stat(path)
    actual = sha256_file(path) if size is None or stat.st_size == size else None
    if actual != sha256:
        found = f"sha256 {actual[:12]}" if actual else f"{stat.st_size} bytes, expected {size}"
        raise CorruptBlob(f"{label} is corrupted: blob {sha256[:12]} now has {found}; "
                          "push it again")
    mark(path, sha256, stat)


def _stamp(sha256: str, stat: os.stat_result) -> dict[str, object]:
    return {"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def is_marked(path: str, sha256: str, label: str) -> bool:
    """Whether the file is unchanged since it was last verified as ``sha256``; CorruptBlob
    when it is missing."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise CorruptBlob(f"{label}: blob {sha256[:12]} is missing from the artifact store") from None
    try:
        with open(path + ".verified") as handle:
            return bool(json.load(handle) == _stamp(sha256, stat))
    except (FileNotFoundError, ValueError):
        return False


def mark(path: str, sha256: str, stat: os.stat_result) -> None:
    """Record that the file, as ``stat`` describes it, was verified as ``sha256``."""
    marker = path + ".verified"
    temporary = f"{marker}.{os.getpid()}"
    with open(temporary, "w") as handle:
        json.dump(_stamp(sha256, stat), handle)
    os.replace(temporary, marker)
