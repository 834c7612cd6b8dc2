"""Stratus no-op handler for ``bench/noop.py``: returns ``{"ok": true}`` for any JSON body."""

from __future__ import annotations

from typing import Any

import stratus


@stratus.deployment(name="noop")
class NoOp:
    def __init__(self, ctx: stratus.Context) -> None:
        pass

    def __call__(self, request: Any) -> dict[str, Any]:
        return {"ok": True}
