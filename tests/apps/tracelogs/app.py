"""Handlers that print and log while they serve, for the tests of trace ids in logs. Logging is
set up when the module is imported (in the revision zygote), as many programs do."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import stratus

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
log = logging.getLogger("tracelogs")


class Talker:
    def __init__(self, ctx: stratus.Context) -> None:
        self.ctx = ctx
        print("talker ready")  # no request: no request_id

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        word = request.get("say", "hello")
        print("printed", word)  # several writes make one line
        logging.info("root logged %s", word)
        log.info("module logged %s", word)
        self.ctx.logger.info("ctx logged %s", word)
        with self.ctx.span("inner"):
            print(f"inside a span {word}")
        sys.stdout.write(f"no newline {word}")  # a line once the request ends
        return {"said": word}


class AsyncTalker:
    def __init__(self, ctx: stratus.Context) -> None:
        self.ctx = ctx

    async def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        word = request.get("say", "hello")
        print(f"async printed {word}")
        await asyncio.sleep(0.001)
        logging.info("async logged %s", word)
        return {"said": word}
