"""Handlers for the integration tests: well-behaved ones and ones that misbehave on purpose."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import numpy as np

import stratus

_leaked: list[bytearray] = []


@stratus.deployment(name="echo", max_concurrency=8)
class Echo:
    def __init__(self, ctx: stratus.Context) -> None:
        self.ctx = ctx
        time.sleep(float(ctx.config.get("init_sleep", 0)))  # a slow model load

    def __call__(self, request: Any) -> dict[str, Any]:
        if isinstance(request, dict) and request.get("sleep"):
            time.sleep(float(request["sleep"]))
        return {
            "echo": request,
            "replica": self.ctx.replica_id,
            "pid": os.getpid(),
            "revision": self.ctx.revision,
            "config": self.ctx.config,
            "greeting": self.ctx.env.get("GREETING"),
            "cwd_has_app": os.path.isfile("app.py"),
        }


class AsyncEcho:
    def __init__(self, ctx: stratus.Context) -> None:
        self.replica = ctx.replica_id

    async def __call__(self, request: Any) -> dict[str, Any]:
        if isinstance(request, dict) and request.get("sleep"):
            await asyncio.sleep(float(request["sleep"]))
        return {"echo": request, "replica": self.replica}


class LoopBlocker:
    """An async handler that blocks its event loop: the replica stops heartbeating."""

    def __init__(self, ctx: stratus.Context) -> None:
        pass

    async def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("block"):
            time.sleep(float(request["block"]))  # noqa: ASYNC251 - blocks the loop on purpose
        return {"ok": True, "pid": os.getpid()}


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda style: the event is the JSON body."""
    return {
        "statusCode": int(event.get("status", 200)),
        "headers": {"X-Handler": "lambda", "Content-Type": "application/json"},
        "body": {"hello": event.get("name", "world"), "request_id": context.request_id,
                 "function": context.function_name,
                 "remaining_ms_positive": context.get_remaining_time_in_millis() > 0},
    }


def plain_text(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"statusCode": 201, "headers": {"content-type": "text/plain"}, "body": "created"}


class Faulty:
    """Misbehaves as the request asks: raise, hang, crash, leak, or return junk."""

    def __init__(self, ctx: stratus.Context) -> None:
        self.pid = os.getpid()

    def __call__(self, request: dict[str, Any]) -> Any:
        action = request.get("action", "ok")
        if action == "raise":
            raise ValueError("boom: the handler failed")
        if action == "hang":
            time.sleep(3600)
        if action == "crash":
            os._exit(3)
        if action == "segfault":
            os.kill(os.getpid(), signal.SIGSEGV)
        if action == "leak":
            _leaked.append(bytearray(int(request.get("mb", 64)) * 2**20))
            time.sleep(float(request.get("hold", 0)))
        if action == "unencodable":
            return {"value": object()}
        if action == "nan":
            return {"value": float("nan")}
        return {"ok": True, "pid": self.pid}


class BadInit:
    def __init__(self, ctx: stratus.Context) -> None:
        raise RuntimeError("model weights missing: /models/nope.safetensors")

    def __call__(self, request: Any) -> Any:
        return request


@stratus.deployment(
    inputs=[{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
    outputs=[{"name": "doubled", "datatype": "FP32", "shape": [-1, 4]},
             {"name": "total", "datatype": "FP64", "shape": [-1]}],
)
class Doubler:
    def __init__(self, ctx: stratus.Context) -> None:
        pass

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        return {"doubled": x * 2, "total": x.astype(np.float64).sum(axis=1)}


@stratus.deployment(inputs=[{"name": "x", "datatype": "FP32", "shape": [-1, 2]}])
class PairDoubler(Doubler):
    """Doubler as a next revision that declares other inputs: rows of two, not four."""


class Mirror:
    """Returns every input tensor unchanged (v2), under the name ``<input>_out``."""

    def __init__(self, ctx: stratus.Context) -> None:
        pass

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {f"{name}_out": value for name, value in inputs.items()}


class Counter:
    """Streams ``n`` items; with ``pause`` between them. Records a cancelled stream in a file
    so a test can see that the replica stopped producing."""

    def __init__(self, ctx: stratus.Context) -> None:
        self.marker_dir = str(ctx.config.get("marker_dir", "."))

    async def __call__(self, request: dict[str, Any]) -> Any:
        for index in range(int(request.get("n", 3))):
            if index == request.get("fail_at"):
                raise ValueError(f"failed at item {index}")
            yield {"index": index}
            await asyncio.sleep(float(request.get("pause", 0)))
        marker = request.get("marker")
        if marker:
            with open(os.path.join(self.marker_dir, f"{marker}.done"), "w"):  # noqa: ASYNC230
                pass


class SyncCounter:
    def __init__(self, ctx: stratus.Context) -> None:
        pass

    def __call__(self, request: dict[str, Any]) -> Any:
        for index in range(int(request.get("n", 3))):
            yield {"index": index, "square": index * index}
