"""What a handler sees of its environment: ``ctx`` at init and ``context`` per request."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any


class _JsonLineFormatter(logging.Formatter):
    def __init__(self, fields: Mapping[str, Any]) -> None:
        super().__init__()
        self._fields = dict(fields)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "message": record.getMessage(),
            **self._fields,
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def replica_logger(deployment: str, revision: int, replica_id: str) -> logging.Logger:
    """A logger writing JSON lines to the replica's stderr, which goes to the deployment log."""
    logger = logging.getLogger(f"stratus.replica.{deployment}")
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _JsonLineFormatter({"deployment": deployment, "revision": revision, "replica": replica_id})
    )
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


class Context:
    """Given to ``__init__(self, ctx)`` once per replica."""

    def __init__(
        self,
        *,
        deployment: str,
        namespace: str,
        revision: int,
        replica_id: str,
        config: Mapping[str, Any],
        env: Mapping[str, str],
        memory_mb: int | None,
        timeout_s: float,
        logger: logging.Logger,
    ) -> None:
        self.deployment = deployment
        self.namespace = namespace
        self.revision = revision
        self.replica_id = replica_id
        self.config: dict[str, Any] = dict(config)
        self.env: dict[str, str] = dict(env)
        self.memory_mb = memory_mb
        self.timeout_s = timeout_s
        self.logger = logger


class RequestContext:
    """Given to a Lambda-style ``handler(event, context)`` with each request."""

    def __init__(self, replica: Context, request_id: str, deadline: float) -> None:
        self.replica = replica
        self.request_id = request_id
        self.aws_request_id = request_id  # the name Lambda handlers already use
        self.function_name = replica.deployment
        self.function_version = str(replica.revision)
        self.memory_limit_in_mb = replica.memory_mb
        self.config = replica.config
        self.env = replica.env
        self.logger = replica.logger
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))
