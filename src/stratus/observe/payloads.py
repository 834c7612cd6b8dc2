"""Payload logging, opt-in (``logging: {payloads: true}``): each data-plane request's body and
its response on the ``stratus.payloads`` logger, in ``server.jsonl``. The records pass the
handlers' PII mask like every other record (``observe/pii.py``), unless ``mask_pii: false``."""

from __future__ import annotations

import logging
from typing import Any

from starlette.types import Scope

from stratus.observe.logs import PAYLOAD_LOGGER

MAX_CHARS = 8192  # of each body; the rest is counted, not logged


def as_text(data: bytes, limit: int = MAX_CHARS) -> str:
    """A body as the log shows it: its text, cut at ``limit``, or its size when binary."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(data)} bytes of binary data>"
    if len(text) > limit:
        return f"{text[:limit]}... <{len(text) - limit} more characters>"
    return text


class PayloadLog:
    def __init__(self, limit: int = MAX_CHARS) -> None:
        self.log = logging.getLogger(PAYLOAD_LOGGER)
        self.limit = limit

    def record(self, scope: Scope, request: bytes, status: int, response: Any) -> None:
        """``response`` is the reply's bytes, or an iterator for a streamed reply."""
        state = scope.get("state") or {}
        principal = state.get("principal")
        self.log.info("%s %s", scope["path"], status, extra={
            "request_id": state.get("request_id"),
            "namespace": getattr(principal, "namespace", None),
            "status": status,
            "request": as_text(request, self.limit),
            "response": as_text(response, self.limit) if isinstance(response, bytes)
            else "<streamed>",
        })
