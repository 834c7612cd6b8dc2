"""Small handlers for the workflow tests. Each appends one line per call to ``calls.log`` in the
directory its config names (``log_dir``), so a test can count what ran and how often."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import stratus


class _Logged:
    name = "step"

    def __init__(self, ctx: stratus.Context) -> None:
        self.log_dir = ctx.config.get("log_dir")

    def note(self, request: Any) -> None:
        if self.log_dir:
            line = f"{self.name} {json.dumps(request, sort_keys=True)}\n"
            with open(os.path.join(str(self.log_dir), "calls.log"), "a") as log:
                log.write(line)


class Add(_Logged):
    name = "add"

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        self.note(request)
        return {"sum": request["a"] + request["b"]}


class Double(_Logged):
    name = "double"

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        self.note(request)
        return {"value": request["value"] * 2}


class FailOnce(_Logged):
    """Fails the first call for each ``key``, then succeeds: a retry makes it pass."""

    name = "fail-once"

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        self.note(request)
        assert self.log_dir, "fail-once needs a log_dir"
        marker = os.path.join(str(self.log_dir), f"failed-{request.get('key', 'x')}")
        if not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError("failing once on purpose")
        return {"ok": True, "key": request.get("key")}


class AlwaysFail(_Logged):
    name = "always-fail"

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        self.note(request)
        raise ValueError(f"always failing: {request.get('why', 'on purpose')}")


class Slow(_Logged):
    """Sleeps ``seconds``, then answers with its input."""

    name = "slow"

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        self.note(request)
        time.sleep(float(request.get("seconds", 1)))
        return {"slept": request.get("seconds", 1), "tag": request.get("tag")}


class Noop:
    def __init__(self, ctx: stratus.Context) -> None:
        pass

    def __call__(self, request: Any) -> Any:
        return request
