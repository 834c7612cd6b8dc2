"""A handler that answers at once, then, after ``config.after`` requests, takes 300 ms each: a
real slowdown, for the latency-anomaly alert."""

from __future__ import annotations

import time
from typing import Any


class SlowsDown:
    def __init__(self, ctx: Any) -> None:
        self.after = int(ctx.config.get("after", 50))
        self.calls = 0

    def __call__(self, request: Any) -> dict[str, Any]:
        self.calls += 1
        if self.calls > self.after:
            time.sleep(0.3)
        return {"calls": self.calls}
