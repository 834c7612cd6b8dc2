"""Stratus handler for ``bench/async.py``: a no-op that answers ``{"ok": true}``, or, for a
body with ``"clock": true``, the replica's ``time.time()`` when the call started."""

from __future__ import annotations

import time
from typing import Any

import stratus


@stratus.deployment(name="async-noop")
class AsyncNoOp:
    def __init__(self, ctx: stratus.Context) -> None:
        pass

    def __call__(self, request: Any) -> dict[str, Any]:
        started = time.time()  # first thing, so the figure is the handler's start
        if isinstance(request, dict) and request.get("clock"):
            return {"started": started}
        return {"ok": True}
