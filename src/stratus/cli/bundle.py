"""Packs a directory of user code into a deterministic tar.gz, addressed by its sha256.

Deterministic (sorted entries, zeroed times and owners) so the same code always yields
the same digest and a re-deploy of unchanged code uploads nothing. What ``.gitignore`` and
``.stratusignore`` at the code's root exclude stays out.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pathspec

DEFAULT_EXCLUDES = (
    ".git", ".hg", ".svn", ".venv", "venv", "__pycache__", "*.pyc", ".stratus",
    "node_modules", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".DS_Store", "*.egg-info",
)
# Read in this order, so a later file's ``!pattern`` can take back an earlier one's exclusion.
IGNORE_FILES = (".gitignore", ".stratusignore")
LARGEST_SHOWN = 5


@dataclass(frozen=True)
class Bundle:
    data: bytes
    digest: str
    files: int
    largest: tuple[tuple[str, int], ...] = ()  # (relative path, bytes), biggest first


def ignore_spec(root: Path) -> pathspec.GitIgnoreSpec:
    """The default exclusions, then the root's ``.gitignore`` and ``.stratusignore``, with
    git's semantics (``/build`` only at the root, ``logs/`` only directories, ``!`` negates).
    Lines are stripped: a stray leading space is a typo, not part of a file name."""
    lines = list(DEFAULT_EXCLUDES)
    for name in IGNORE_FILES:
        path = root / name
        if path.is_file():
            lines.extend(line.strip() for line in path.read_text().splitlines())
    return pathspec.GitIgnoreSpec.from_lines(lines)


def collect_files(root: Path) -> list[Path]:
    spec = ignore_spec(root)
    found: list[Path] = []
    for directory, subdirs, files in os.walk(root):
        base = Path(directory)
        # An excluded directory is not entered: as with git, nothing inside it comes back.
        subdirs[:] = sorted(
            d for d in subdirs if not spec.match_file((base / d).relative_to(root).as_posix() + "/")
        )
        for name in sorted(files):
            path = base / name
            if path.is_file() and not spec.match_file(path.relative_to(root).as_posix()):
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
    sizes = sorted(((p.relative_to(root).as_posix(), p.stat().st_size) for p in files),
                   key=lambda item: (-item[1], item[0]))
    return Bundle(compressed, hashlib.sha256(compressed).hexdigest(), len(files),
                  tuple(sizes[:LARGEST_SHOWN]))
