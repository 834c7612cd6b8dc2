"""A replica's CPU priority: a shadow's replicas run on what CPU the others leave."""

from __future__ import annotations

import logging
import os

log = logging.getLogger("stratus.backend")

BACKGROUND_NICE = 19  # the lowest CPU priority


def renice(pid: int, background: bool, name: str) -> None:
    # Niceness is per thread on Linux: set every thread's; threads started later inherit.
    try:
        threads = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        threads = [pid]
    for tid in threads:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, BACKGROUND_NICE if background else 0)
        except OSError as exc:  # gone, or not allowed to raise priority back
            log.debug("cannot renice %s thread %d: %s", name, tid, exc)
