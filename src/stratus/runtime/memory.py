"""How much memory a process uses, read from ``/proc/<pid>/smaps_rollup``.

- ``pss``: its fair share: private pages plus shared pages divided by their sharers. Summed
  over processes, the memory they really take. Used for budgets and reports: it includes a
  replica's share of the decrypted weights it maps from disk (page cache), so the weights N
  replicas map count once, split among them.
- ``dirty``: pages it wrote and owns alone (heap, copies). What a leak grows, and what a
  replica's memory limit caps; file pages it only reads (mapped weights, written back before
  any replica maps them) are not its own.
- ``shmem``: the part of ``pss`` in shared memory (tmpfs files such as decrypted weights in
  ``/dev/shm`` with ``artifacts.plaintext: memory``), which the host budget charges to the
  copy, not to each replica mapping it.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

_FIELDS = {b"Rss:": "rss", b"Pss:": "pss", b"Private_Dirty:": "dirty", b"Swap:": "swap",
           b"Pss_Shmem:": "shmem"}


@dataclass(frozen=True)
class Memory:
    rss: int = 0
    pss: int = 0
    dirty: int = 0
    swap: int = 0
    shmem: int = 0

    @property
    def charged(self) -> int:
        """What a memory limit counts: written pages, in memory or swapped out."""
        return self.dirty + self.swap


def read_memory(pid: int | str = "self") -> Memory:
    values: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as rollup:
            for line in rollup:
                key = _FIELDS.get(line.split(b" ", 1)[0])
                if key is not None:
                    values[key] = int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return Memory()
    return Memory(**values)


def peak_rss() -> int:
    """This process's peak resident set so far, in bytes (Linux counts ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def read_peak_rss(pid: int) -> int:
    """Another process's peak resident set (``VmHWM``) in bytes; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0
