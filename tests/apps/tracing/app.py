"""Handlers that make their own spans through ``ctx.span``, for the tracing tests."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import stratus


class Traced:
    def __init__(self, ctx: stratus.Context) -> None:
        self.ctx = ctx

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        with self.ctx.span("tokenize", {"chars": len(str(request.get("text", "")))}) as span:
            words = str(request.get("text", "")).split()
            span.set_attribute("words", len(words))
            recorded = span.is_recording()
        if request.get("fail"):
            with self.ctx.span("doomed"):
                raise ValueError("asked to fail")
        return {"words": len(words), "pid": os.getpid(), "recorded": recorded}


class AsyncTraced:
    def __init__(self, ctx: stratus.Context) -> None:
        self.ctx = ctx

    async def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        with self.ctx.span("think"):
            await asyncio.sleep(0.001)
        return {"pid": os.getpid()}


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    with context.span("lambda-work"):
        return {"statusCode": 200, "body": {"ok": True}}
