"""The one interface every queue backend implements (SQL via SQLAlchemy for SQLite and
PostgreSQL, and Redis); tests/integration/test_queue_backends.py runs the same suite on all three."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from stratus.queue.records import AsyncInvocation, NewInvocation, Page, Status


class InvocationQueue(Protocol):
    """Durable asynchronous invocations. Every method is a coroutine; a write returns only
    once it is committed (fsync'd by SQLite/PostgreSQL, acknowledged by Redis), so a 202
    sent after ``enqueue`` is never a lie. Times are epoch seconds, passed in by the caller
    (the queue has no clock of its own)."""

    async def open(self) -> None:
        """Create what is missing (tables come from the migrations; Redis needs nothing)."""

    async def close(self) -> None: ...

    async def enqueue(self, new: NewInvocation, now: float) -> tuple[AsyncInvocation, bool]:
        """Store a new invocation, QUEUED (RUNNING under ``new.running_owner``). With an
        idempotency key already used in the namespace within IDEMPOTENCY_WINDOW_S: the first
        invocation and False if the digest matches, IdempotencyConflict (422) if not. The
        check and the insert are one atomic step: two racing repeats make one invocation."""

    async def claim(self, owner: str, namespace: str, deployment: str, limit: int, now: float,
                    lease_s: float) -> list[AsyncInvocation]:
        """Up to ``limit`` QUEUED invocations of one deployment whose ``not_before`` has come,
        highest priority first, then oldest: each set RUNNING, its attempts + 1, leased to
        ``owner`` until ``now + lease_s``. Concurrent claimers never get the same one
        (PostgreSQL: FOR UPDATE SKIP LOCKED)."""

    async def renew(self, owner: str, ids: Sequence[str], until: float) -> None:
        """Extend the leases ``owner`` still holds."""

    async def finish(self, owner: str, invocation_id: str, status: Status, now: float, *,
                     result: bytes | None = None, error: dict[str, Any] | None = None,
                     revision: int | None = None) -> AsyncInvocation | None:
        """End an attempt the owner holds: SUCCEEDED, FAILED, DEAD or CANCELLED. None when
        the owner no longer holds it (its lease expired and it was recovered, or it was
        cancelled): the caller's outcome is dropped."""

    async def end(self, owner: str, invocation_id: str, status: Status, now: float, *,
                  result: bytes | None = None, error: dict[str, Any] | None = None,
                  revision: int | None = None) -> bool:
        """``finish`` for a caller that needs no record back (no one waits for it, no
        destination takes it): whether the owner still held it. The SQL backends then write
        without reading the row back."""

    async def retry(self, owner: str, invocation_id: str, now: float, not_before: float,
                    error: dict[str, Any], revision: int | None = None) -> AsyncInvocation | None:
        """Back to QUEUED after a failed attempt, not to run before ``not_before``; None as
        for ``finish``."""

    async def set_progress(self, invocation_id: str, fraction: float, message: str | None,
                           now: float) -> None: ...

    async def get(self, namespace: str, invocation_id: str) -> AsyncInvocation | None:
        """None for an unknown id and for another namespace's: both are 404s."""

    async def page(self, namespace: str, *, deployment: str | None = None,
                   status: Status | None = None, limit: int = 50,
                   cursor: str | None = None) -> Page:
        """Newest first."""

    async def cancel(self, namespace: str, invocation_id: str,
                     now: float) -> AsyncInvocation | None:
        """QUEUED or RUNNING -> CANCELLED (a running one's owner finds it gone and stops it);
        a terminal one is returned unchanged; None if unknown."""

    async def redrive(self, namespace: str, deployment: str, ids: Sequence[str] | None,
                      now: float, expires_at: float) -> list[str]:
        """DEAD -> QUEUED with attempts 0 (all of the deployment's dead ones when ``ids`` is
        None); the ids moved."""

    async def recover(self, now: float) -> int:
        """RUNNING invocations whose lease ended (their owner died) back to QUEUED; how many."""

    async def pending(self, now: float) -> dict[tuple[str, str], int]:
        """QUEUED invocations per (namespace, deployment), ready or waiting for a retry: the
        worker's list of what to claim, and the autoscaler's queue-length signal."""

    async def expire(self, now: float) -> list[AsyncInvocation]:
        """QUEUED invocations past ``expires_at`` -> DEAD; those moved."""

    async def purge(self, finished_before: float, dead_before: float) -> int:
        """Delete terminal invocations finished before the first time (dead ones before the
        second); their idempotency keys go with them."""
