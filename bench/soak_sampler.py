"""What ``bench/soak.py`` watches: the server's resources every few seconds (RSS, descriptors,
threads, the process tree, the metadata database on disk) and the slope of each over time."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from procfs import descendants, smaps_rollup_kib

SERIES = ("server_rss_mib", "tree_pss_mib", "server_fds", "server_threads", "processes",
          "sqlite_mib")


@dataclass
class Sample:
    at_s: float  # since the workload began
    values: dict[str, float]


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def _database_bytes(data_dir: Path) -> int:
    """The SQLite files (database, WAL, shared memory) anywhere in the data dir but the blobs."""
    total = 0
    for path in data_dir.rglob("*.db*"):
        if "blobs" not in path.parts and path.is_file():
            total += path.stat().st_size
    return total


def take(server_pid: int, data_dir: Path, at_s: float) -> Sample:
    tree = [server_pid, *descendants(server_pid)]
    pss = 0
    for pid in tree:
        try:
            pss += smaps_rollup_kib(pid).get("Pss", 0)
        except OSError:  # a replica that ended between the listing and the read
            continue
    return Sample(at_s, {
        "server_rss_mib": smaps_rollup_kib(server_pid).get("Rss", 0) / 1024,
        "tree_pss_mib": pss / 1024,
        "server_fds": float(len(os.listdir(f"/proc/{server_pid}/fd"))),
        "server_threads": float(_threads(server_pid)),
        "processes": float(len(tree)),
        "sqlite_mib": _database_bytes(data_dir) / 2**20,
    })


def slope_per_hour(samples: list[Sample], series: str) -> float:
    """Least-squares slope of ``series`` against time, per hour: what an hour more would add."""
    if len(samples) < 2:
        return 0.0
    xs = [s.at_s for s in samples]
    ys = [s.values[series] for s in samples]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread * 3600
