"""The handler of ``bench/reliability.py``, for Stratus and the Ray Serve peer alike: it sleeps
as long as the request asks (the service time), then names the process that served it."""

from __future__ import annotations

import os
import time
from typing import Any


class Sleeper:
    def __init__(self, ctx: object = None) -> None:  # Stratus passes its context; Ray nothing
        self.pid = os.getpid()

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        time.sleep(float(request.get("sleep", 0)))
        return {"id": request.get("id"), "pid": self.pid}
