"""Handlers for the asynchronous invocation tests: each records its attempts in a file named by
the invocation id (the request id an async attempt carries), so a test counts what ran."""

from __future__ import annotations

import fcntl
import os
import time
from typing import Any

from stratus.errors import BadRequest


def _record(context: Any, what: str) -> int:
    """Append one line for this attempt; the number of attempts so far, this one included."""
    path = os.path.join(context.config["marker_dir"], f"{context.aws_request_id}.attempts")
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write(what + "\n")
        handle.flush()
        handle.seek(0)
        return len(handle.read().splitlines())


def flaky(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Fails ``fail_times`` times (default 2), then succeeds."""
    attempt = _record(context, "attempt")
    if attempt <= int(event.get("fail_times", 2)):
        raise RuntimeError(f"attempt {attempt} fails on purpose")
    return {"attempt": attempt, "echo": event}


def always_fails(event: dict[str, Any], context: Any) -> dict[str, Any]:
    _record(context, "attempt")
    raise RuntimeError("this handler always fails")


def bad_input(event: dict[str, Any], context: Any) -> dict[str, Any]:
    _record(context, "attempt")
    raise BadRequest("the event lacks the field 'image'")


def slow(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Reports progress as it sleeps; records its start, and its end unless cancelled."""
    _record(context, "start")
    steps = int(event.get("steps", 4))
    for step in range(steps):
        context.progress((step + 1) / steps, f"step {step + 1} of {steps}")
        time.sleep(float(event.get("step_s", 0.25)))
    _record(context, "end")
    return {"steps": steps}


def once(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Effect exactly once per invocation: appends the id to a shared log unless already
    there, under a lock, so a rerun after a crash adds nothing. Sleeps ``sleep`` first."""
    time.sleep(float(event.get("sleep", 0)))
    path = os.path.join(context.config["marker_dir"], "effects.log")
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        if context.aws_request_id not in handle.read().split():
            handle.write(context.aws_request_id + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    runs = os.path.join(context.config["marker_dir"], "runs.log")
    with open(runs, "a") as handle:
        handle.write(context.aws_request_id + "\n")
    return {"id": context.aws_request_id}


def echo(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"echo": event, "id": context.aws_request_id, "at": time.time()}
