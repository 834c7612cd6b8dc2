"""A handler that talks: print() to stdout, a write to stderr, and a record on ctx.logger."""

from __future__ import annotations

import sys
from typing import Any

import stratus


class Chatty:
    def __init__(self, ctx: stratus.Context) -> None:
        self.ctx = ctx
        print("chatty init done")

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        word = request.get("say", "hello")
        print(f"stdout says {word}")
        sys.stderr.write(f"stderr says {word}\n")
        self.ctx.logger.info("logger says %s", word)
        return {"said": word}
