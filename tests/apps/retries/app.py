"""A handler for the retry tests: it notes each request it takes, before any work, in a file
named after its pid, so a test can tell which requests reached a replica that it then killed."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import stratus


class Marked:
    def __init__(self, ctx: stratus.Context) -> None:
        self.pid = os.getpid()
        self.path = os.path.join(str(ctx.config["markers"]), str(self.pid))

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        # One small O_APPEND write: whole on disk before the handler goes on, kill -9 or not.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{request['id']}\n".encode())
        finally:
            os.close(fd)
        time.sleep(float(request.get("sleep", 0)))
        return {"id": request["id"], "pid": self.pid}


class Streamed(Marked):
    """Yields one item at once, then another after ``sleep`` seconds."""

    def __call__(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:  # type: ignore[override]
        answer = super().__call__({"id": request["id"]})
        yield answer
        time.sleep(float(request.get("sleep", 0)))
        yield answer
