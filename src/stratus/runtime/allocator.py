"""glibc's malloc set for a process that moves large tensors: big blocks come from the heap
and stay there for reuse, instead of each being a fresh ``mmap`` that faults in every page.

On the machines measured (docs/benchmarks.md, gRPC), a fresh 38 MB buffer costs some 40 ms of
page faults, eight times a copy into memory already mapped; a tensor request makes several.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger("stratus.runtime")

# mallopt's parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4
M_ARENA_MAX = -8

# Free memory kept at the heap's top before it goes back to the system: a few large requests'
# buffers. Above it, glibc trims as usual.
TRIM_THRESHOLD = 256 << 20
TOP_PAD = 16 << 20


def tune_for_large_buffers() -> bool:
    """Set the allocator of this process (call it before any thread starts). One arena: with
    ``mmap`` off, a block larger than a thread arena's 64 MiB heap could not be had elsewhere.
    False where it does not apply (not glibc) or ``STRATUS_MALLOC_TUNING=0`` turns it off."""
    if os.environ.get("STRATUS_MALLOC_TUNING", "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None or not hasattr(libc, "gnu_get_libc_version"):
        return False
    settings = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
                (M_TOP_PAD, TOP_PAD))
    for parameter, value in settings:
        if mallopt(parameter, value) != 1:
            log.warning("mallopt(%d, %d) failed; the allocator keeps its defaults", parameter, value)
            return False
    return True
