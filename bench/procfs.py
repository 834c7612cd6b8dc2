"""Reading ``/proc``: process trees, command lines, memory (``smaps_rollup``) and I/O counters.

Used by ``bench/models.py`` (replica PSS, bytes read from disk) and ``stratus_target.py``
(finding the zygotes).
"""

from __future__ import annotations

import re
from pathlib import Path


def cmdline(pid: int) -> str:
    """The process's command line, space-joined; ``""`` once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from ``/proc/*/stat``), zombies excluded."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()  # state ppid ...
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return found


def smaps_rollup_kib(pid: int) -> dict[str, int]:
    """``/proc/<pid>/smaps_rollup`` as ``{"Rss": kB, "Pss": kB, "Pss_Anon": kB, ...}``."""
    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+):\s+(\d+) kB", text, re.M)}


def io_read_bytes(pid: int) -> int | None:
    """``read_bytes`` of ``/proc/<pid>/io``: bytes this process made the kernel fetch from storage."""
    try:
        found = re.search(r"^read_bytes:\s+(\d+)", Path(f"/proc/{pid}/io").read_text(), re.M)
    except OSError:
        return None
    return int(found.group(1)) if found else None
