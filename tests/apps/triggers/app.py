"""A handler whose answer an event chooses: success, a failure that is retried (and, retries
exhausted, dead-lettered), or bad input (failed at once, not retried)."""

from __future__ import annotations

from typing import Any

from stratus.errors import BadRequest


def judge(event: dict[str, Any], context: Any) -> dict[str, Any]:
    verdict = event.get("verdict", "ok")
    if verdict == "raise":
        raise RuntimeError("this event always fails")
    if verdict == "bad":
        raise BadRequest("this event is bad input")
    return {"judged": event}
