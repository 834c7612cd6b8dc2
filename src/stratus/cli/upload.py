"""Uploads of content-addressed blobs with a progress bar; skipped when the server has them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.progress import Progress

from stratus.cli.client import Client
from stratus.cli.terminal import make_console, size_text, transfer_bar

console = make_console(stderr=True)
CHUNK = 1 << 20
Source = Path | bytes


def _read(source: Source) -> Iterator[bytes]:
    if isinstance(source, bytes):
        for offset in range(0, len(source), CHUNK):
            yield source[offset : offset + CHUNK]
        return
    with open(source, "rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


def size_of(source: Source) -> int:
    return len(source) if isinstance(source, bytes) else source.stat().st_size


def digest_of(source: Source, label: str) -> str:
    """sha256 of a file (with a progress bar: a big model takes seconds) or of bytes."""
    digest = hashlib.sha256()
    with transfer_bar(console) as progress:
        task = progress.add_task(f"hashing {label}", total=size_of(source))
        for chunk in _read(source):
            digest.update(chunk)
            progress.update(task, advance=len(chunk))
    return digest.hexdigest()


def upload(client: Client, kind: str, source: Source, digest: str, label: str) -> bool:
    """PUT /api/{kind}/{digest} unless the server has it; True when bytes were sent."""
    exists = client.request("HEAD", f"/api/{kind}/{digest}", expect=(200, 404))
    if exists.status_code == 200:
        console.print(f"[dim]{label} ({digest[:12]}) already on the server[/dim]")
        return False
    size = size_of(source)

    def chunks(progress: Progress, task: Any) -> Iterator[bytes]:
        for chunk in _read(source):
            progress.update(task, advance=len(chunk))
            yield chunk

    with transfer_bar(console) as progress:
        task = progress.add_task(f"uploading {label}", total=size)
        client.upload(f"/api/{kind}/{digest}", chunks(progress, task), size)
    console.print(f"uploaded {label} ({digest[:12]}, {size_text(size)})")
    return True
