"""A handler that leaves a process behind: a child in a session of its own, which outlives
its replica (the zygote kills only the replica), as a crashed server's orphan would."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import stratus


class Spawner:
    def __init__(self, ctx: stratus.Context) -> None:
        pass

    def __call__(self, request: Any) -> dict[str, Any]:
        child = subprocess.Popen(["sleep", "600"], start_new_session=True,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        return {"child": child.pid, "pid": os.getpid()}
