"""What the queue stores of one asynchronous invocation, and the statuses it moves through."""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


class Status(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # a non-retryable error (bad input): not dead-lettered
    DEAD = "dead"  # retries exhausted or too old: in the deployment's dead-letter queue
    CANCELLED = "cancelled"


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.DEAD, Status.CANCELLED})

IDEMPOTENCY_WINDOW_S = 24 * 3600.0  # a key names one invocation for this long


def body_digest(namespace: str, deployment: str, payload: bytes) -> str:
    """What an idempotency key is checked against: the same key with another digest is a 422."""
    digest = hashlib.sha256(f"{namespace}\0{deployment}\0".encode())
    digest.update(payload)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class NewInvocation:
    """What ``enqueue`` is given. Times are epoch seconds (the queue's clock is injected)."""

    id: str
    namespace: str
    deployment: str
    payload: bytes  # the JSON body, as the client sent it
    max_attempts: int
    expires_at: float  # created + the deployment's max_event_age_s: dead after this
    priority: int = 0  # higher first, within a deployment
    not_before: float = 0.0  # epoch s; 0: at once
    idempotency_key: str | None = None
    digest: str | None = None  # body_digest(...), set with an idempotency key
    pinned_revision: int | None = None
    # Who made it: {"kind": "api" | "schedule" | "topic" | "stream" | "workflow" | "redrive", ...}
    source: dict[str, Any] = field(default_factory=lambda: {"kind": "api"})
    # A synchronous call with an idempotency key is recorded as already running under this
    # owner, so no worker claims it; it is finished by the call itself.
    running_owner: str | None = None
    lease_s: float = 0.0  # with running_owner: how long the call holds it


@dataclass(frozen=True, slots=True)
class AsyncInvocation:
    """One stored invocation, as a backend reads it back."""

    id: str
    namespace: str
    deployment: str
    payload: bytes
    status: Status
    priority: int
    attempts: int  # runs started so far (a claim counts one)
    max_attempts: int
    created_at: float
    updated_at: float
    not_before: float
    expires_at: float
    started_at: float | None = None  # of the latest attempt
    finished_at: float | None = None
    progress: float | None = None  # 0..1, as the handler last reported
    progress_message: str | None = None
    result: bytes | None = None  # the handler's JSON answer, on success
    error: dict[str, Any] | None = None  # {"type", "message"} of the latest failure
    revision: int | None = None  # that served the latest attempt
    idempotency_key: str | None = None
    digest: str | None = None
    pinned_revision: int | None = None
    source: dict[str, Any] = field(default_factory=dict)
    lease_owner: str | None = None
    lease_until: float | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def view(self) -> dict[str, Any]:
        """The public JSON shape of ``GET /api/invocations/{id}``."""
        body: dict[str, Any] = {
            "id": self.id, "deployment": self.deployment, "status": self.status.value,
            "priority": self.priority, "attempts": self.attempts,
            "max_attempts": self.max_attempts, "created_at": self.created_at,
            "updated_at": self.updated_at, "started_at": self.started_at,
            "finished_at": self.finished_at, "expires_at": self.expires_at,
            "progress": None if self.progress is None else {
                "fraction": self.progress, "message": self.progress_message},
            "revision": self.revision, "source": self.source,
        }
        if self.not_before > self.updated_at and self.status is Status.QUEUED:
            body["next_attempt_at"] = self.not_before
        if self.result is not None:
            body["result"] = json.loads(self.result)
        if self.error is not None:
            body["error"] = {**self.error, "request_id": self.id}
        if self.idempotency_key is not None:
            body["idempotency_key"] = self.idempotency_key
        return body


@dataclass(frozen=True, slots=True)
class Page:
    items: list[AsyncInvocation]
    next_cursor: str | None  # give it back as ``cursor`` for the next page; None: the last
