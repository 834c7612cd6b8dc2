"""Reading JSON-lines log files: the last lines since a time, and following a file as it grows."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

TAIL_MAX_BYTES = 4 * 1024 * 1024  # how far back from the end a tail looks
FOLLOW_POLL_S = 0.2


def line_time(line: bytes) -> float | None:
    """The ``ts`` of a JSON line, or None for a line without one (text, or not JSON)."""
    if not line.startswith(b"{"):
        return None
    try:
        ts = json.loads(line).get("ts")
    except (ValueError, AttributeError):
        return None
    return float(ts) if isinstance(ts, int | float) else None


def select_lines(lines: list[bytes], count: int, since: float | None) -> list[bytes]:
    """The last ``count`` lines at or after ``since``; a line without a time takes the time
    of the line before it (a traceback's continuation goes with its record)."""
    if since is not None:
        kept, current = [], None
        for line in lines:
            current = line_time(line) or current
            if current is not None and current >= since:
                kept.append(line)
        lines = kept
    return lines[-count:] if count else []


def read_tail(path: Path, count: int, since: float | None = None) -> tuple[str, int]:
    """The selected lines as text, and the file offset after the last whole line."""
    if not path.is_file():
        return "", 0
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        end = handle.tell()
        start = max(0, end - TAIL_MAX_BYTES)
        handle.seek(start)
        data = handle.read(end - start)
    cut = data.rfind(b"\n") + 1  # a line still being written is left to the follower
    lines = data[:cut].splitlines()
    if start > 0 and lines:
        lines = lines[1:]  # the first line was cut by the window
    found = select_lines(lines, count, since)
    text = b"\n".join(found).decode(errors="replace") + ("\n" if found else "")
    return text, start + cut


def _read_from(path: Path, offset: int) -> tuple[bytes, int]:
    """Whole lines appended after ``offset``, and the new offset; a shrunk file starts over."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return b"", 0
    if size < offset:
        offset = 0
    if size == offset:
        return b"", offset
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.read(min(size - offset, TAIL_MAX_BYTES))
    cut = data.rfind(b"\n") + 1
    return data[:cut], offset + cut


async def follow(path: Path, offset: int, first: str, going: Callable[[], bool],
                 final: bool = False) -> AsyncIterator[bytes]:
    """``first``, then whatever is appended to ``path`` after ``offset``, while ``going()``;
    with ``final``, what was appended up to the moment it stopped too (a job's last lines)."""
    if first:
        yield first.encode()
    while going():
        data, offset = await asyncio.to_thread(_read_from, path, offset)
        if data:
            yield data
        else:
            await asyncio.sleep(FOLLOW_POLL_S)
    while final:
        data, offset = await asyncio.to_thread(_read_from, path, offset)
        if not data:
            return
        yield data
