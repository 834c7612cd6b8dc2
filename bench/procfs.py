"""Reading ``/proc``: process trees, command lines, memory (``smaps_rollup``), I/O counters and
CPU time.

Used by ``bench/models.py`` (replica PSS, bytes read from disk by a process and by the
disk), ``stratus_target.py`` (finding the zygotes) and ``bench/grpc.py`` (servers' CPU
seconds).
"""

from __future__ import annotations

import os
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


def descendants(pid: int) -> list[int]:
    """Children, grandchildren, ... of ``pid``."""
    found, frontier = [], [pid]
    while frontier:
        kids = [kid for parent in frontier for kid in children(parent)]
        found += kids
        frontier = kids
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (``utime + stime`` of ``/proc/<pid>/stat``);
    0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # state ppid ...
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # fields 14, 15 of stat


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and every process under it (the live ones: a child that exited
    took its time with it, unless its parent reaped it, which adds it to the parent's
    ``cutime``, not counted here)."""
    return sum(cpu_seconds(each) for each in (pid, *descendants(pid)))


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


def disk_sectors_read(path: Path) -> int | None:
    """Sectors (512 bytes) read so far from the block device holding ``path`` (``/proc/diskstats``,
    the device whose major:minor is the file system's); None if it is not listed there (a
    device-mapper or network file system under another name)."""
    device = os.stat(path).st_dev
    wanted = (os.major(device), os.minor(device))
    for line in Path("/proc/diskstats").read_text().splitlines():
        fields = line.split()
        if (int(fields[0]), int(fields[1])) == wanted:
            return int(fields[5])
    return None
