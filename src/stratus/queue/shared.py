"""What every queue backend does the same way: the record a new invocation starts as, the
opaque page cursor, and the error of an invocation that expired before it ran."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from stratus.errors import BadRequest
from stratus.queue.records import AsyncInvocation, NewInvocation, Status

EXPIRED_ERROR: dict[str, Any] = {
    "type": "expired",
    "message": "the invocation did not start before its maximum event age (max_event_age_s) "
               "ran out"}


def encode_cursor(seq: int) -> str:
    """Where the next page starts: the sequence number of the last item given, base64'd so
    clients treat it as opaque."""
    return base64.urlsafe_b64encode(f"q{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not text.startswith("q"):
            raise ValueError(text)
        return int(text[1:])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest(f"invalid cursor {cursor!r}: give back a next_cursor as it was") from None


def created_record(new: NewInvocation, now: float) -> AsyncInvocation:
    """What ``enqueue`` stores: QUEUED, or RUNNING (one attempt started) under the sync call
    that holds it."""
    running = new.running_owner is not None
    return AsyncInvocation(
        id=new.id, namespace=new.namespace, deployment=new.deployment, payload=new.payload,
        status=Status.RUNNING if running else Status.QUEUED, priority=new.priority,
        attempts=1 if running else 0, max_attempts=new.max_attempts, created_at=now,
        updated_at=now, not_before=new.not_before, expires_at=new.expires_at,
        started_at=now if running else None, idempotency_key=new.idempotency_key,
        digest=new.digest, pinned_revision=new.pinned_revision, source=dict(new.source),
        lease_owner=new.running_owner, lease_until=now + new.lease_s if running else None)
