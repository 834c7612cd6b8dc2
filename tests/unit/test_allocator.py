"""The gateway's allocator setting, each case in a fresh interpreter (mallopt is per process,
and must come before threads have arenas of their own)."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = """
from stratus.runtime.allocator import tune_for_large_buffers
tuned = tune_for_large_buffers()
block = bytearray(48 << 20)
# An mmap'd block is an anonymous mapping of its own, at least as large as the block; a block
# from the heap lies inside [heap], which is kept and reused once freed.
own_mapping = False
for line in open("/proc/self/maps"):
    fields = line.split()
    start, end = (int(part, 16) for part in fields[0].split("-"))
    if len(fields) == 5 and end - start >= len(block):
        own_mapping = True
print(tuned, own_mapping)
"""


def _probe(**env: str) -> str:
    result = subprocess.run([sys.executable, "-c", PROBE], env={**os.environ, **env},
                            capture_output=True, text=True, check=True, timeout=60)
    return result.stdout.strip()


def test_large_blocks_come_from_the_heap_once_tuned() -> None:
    assert _probe() == "True False"


def test_the_setting_can_be_turned_off() -> None:
    assert _probe(STRATUS_MALLOC_TUNING="0") == "False True"
