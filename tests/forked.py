"""Running a test's body in a forked child, for code that changes process-wide state (the
user it runs as, its mount namespace) that the test process must keep."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any


def in_child(body: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``body`` in a forked child and return what it reports, or the error it raised."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            result = body()
        except BaseException as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"}
        os.write(write_end, json.dumps(result).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    found: dict[str, Any] = json.loads(data)
    return found
