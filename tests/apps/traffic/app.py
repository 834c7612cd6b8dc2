"""A handler whose revisions differ by config: how slow, how often it fails."""

from __future__ import annotations

import random
import time
from typing import Any

import stratus


class Variant:
    def __init__(self, ctx: stratus.Context) -> None:
        self.revision = ctx.revision
        self.sleep_s = float(ctx.config.get("sleep_s", 0))
        self.fail_ratio = float(ctx.config.get("fail_ratio", 0))
        self.rng = random.Random(ctx.replica_id)

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.sleep_s:
            time.sleep(self.sleep_s)
        if self.rng.random() < self.fail_ratio:
            raise RuntimeError(f"revision {self.revision} failed on purpose")
        return {"revision": self.revision, "echo": request}
