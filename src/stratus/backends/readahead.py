"""Read-ahead of a replica's weights: the kernel pulls them into the page cache while the
replica forks and initialises."""

from __future__ import annotations

import os
from typing import Any

READ_AHEAD_CHUNK = 8 << 20  # the kernel acts on at most read_ahead_kb of one WILLNEED call


def read_ahead(models: list[dict[str, Any]]) -> None:
    """Ask the kernel to pull a replica's weights into the page cache while the replica forks
    and initialises, so its first forward pass finds them read rather than faulting them in
    page by page."""
    for model in models:
        for entry in model["files"].values():
            try:
                fd = os.open(entry["path"], os.O_RDONLY)
            except OSError:
                continue  # loading will report it clearly
            try:
                size = os.fstat(fd).st_size
                for offset in range(0, size, READ_AHEAD_CHUNK):
                    os.posix_fadvise(fd, offset, READ_AHEAD_CHUNK, os.POSIX_FADV_WILLNEED)
            finally:
                os.close(fd)

