"""Packs a directory of user code into a deterministic tar.gz, addressed by its sha256.

Deterministic (sorted entries, zeroed times and owners) so the same code always yields
the same digest and a re-deploy of unchanged code uploads nothing.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

DEFAULT_EXCLUDES = (
    ".git", ".hg", ".svn", ".venv", "venv", "__pycache__", "*.pyc", ".stratus",
    "node_modules", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".DS_Store", "*.egg-info",
)
IGNORE_FILE = ".stratusignore"


@dataclass(frozen=True)
class Bundle:
    data: bytes
    digest: str
    files: int


def _patterns(root: Path) -> list[str]:
    patterns = list(DEFAULT_EXCLUDES)
    ignore = root / IGNORE_FILE
    if ignore.is_file():
        for line in ignore.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                patterns.append(line.rstrip("/"))
    return patterns


def _excluded(relative: str, name: str, patterns: list[str]) -> bool:
    """gitignore-like: ``/build`` matches only at the root, ``build`` anywhere."""
    for pattern in patterns:
        if pattern.startswith("/"):
            if fnmatch.fnmatch(relative, pattern[1:]):
                return True
        elif fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(relative, pattern):
            return True
    return False


def collect_files(root: Path) -> list[Path]:
    patterns = _patterns(root)
    found: list[Path] = []
    for directory, subdirs, files in os.walk(root):
        base = Path(directory)
        subdirs[:] = sorted(
            d for d in subdirs
            if not _excluded((base / d).relative_to(root).as_posix(), d, patterns)
        )
        for name in sorted(files):
            path = base / name
            if path.is_file() and not _excluded(path.relative_to(root).as_posix(), name, patterns):
                found.append(path)
    return found


def build_bundle(root: Path) -> Bundle:
    files = collect_files(root)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path in files:
            info = tarfile.TarInfo(path.relative_to(root).as_posix())
            info.size = path.stat().st_size
            info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.mtime = 0
            with open(path, "rb") as handle:
                archive.addfile(info, handle)
    compressed = gzip.compress(raw.getvalue(), compresslevel=6, mtime=0)
    return Bundle(compressed, hashlib.sha256(compressed).hexdigest(), len(files))
