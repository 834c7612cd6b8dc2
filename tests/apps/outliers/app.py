"""A handler for the outlier tests: it fails on the replica whose pid the request names, so one
replica can be made sick while its siblings stay healthy."""

from __future__ import annotations

import os
import time
from typing import Any

import stratus


@stratus.deployment(name="flaky", max_concurrency=4)
class Flaky:
    def __init__(self, ctx: stratus.Context) -> None:
        self.replica = ctx.replica_id

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("fail_pid") == os.getpid():
            raise RuntimeError("this replica is sick")
        if request.get("sleep"):
            time.sleep(float(request["sleep"]))
        return {"replica": self.replica, "pid": os.getpid()}
