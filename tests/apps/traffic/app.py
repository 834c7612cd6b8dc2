"""A handler whose revisions differ by config: how slow, how often it fails (at random, or
every n-th request of a replica)."""

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
        self.fail_every = int(ctx.config.get("fail_every", 0))
        self.rng = random.Random(ctx.replica_id)
        self.served = 0

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.sleep_s:
            time.sleep(self.sleep_s)
        self.served += 1
        if self.rng.random() < self.fail_ratio or (
                self.fail_every and self.served % self.fail_every == 0):
            raise RuntimeError(f"revision {self.revision} failed on purpose")
        return {"revision": self.revision, "echo": request}
