"""Error types shared by every layer, each carrying its HTTP status and error type.

Layers below the gateway raise these; the gateway renders them in the contract's
JSON shape: ``{"error": {"type": ..., "message": ..., "request_id": ...}}``.
"""

from __future__ import annotations

import errno
import math
from collections.abc import Iterable
from difflib import get_close_matches


class StratusError(Exception):
    """Base of every error that maps onto a documented HTTP status."""

    status: int = 500
    type: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        # Stack traces and similar: logged, and shown only to admins who ask for them.
        self.detail = detail
        # The revision that was serving when the error happened, once one was chosen.
        self.revision: int | None = None
        # How many times the dispatcher sent the request (X-Stratus-Attempts), once it did.
        self.attempts: int | None = None


def retry_after_seconds(delay: float) -> int:
    """A ``Retry-After`` value: whole seconds, rounded up and at least 1, so that a client
    that waits as told is not refused again for coming back early."""
    return max(1, math.ceil(delay))


class BadRequest(StratusError):
    status = 400
    type = "invalid_request"


class InvalidJSON(BadRequest):
    type = "invalid_json"


class InvalidTensor(BadRequest):
    type = "invalid_tensor"


class ContextLengthExceeded(BadRequest):
    """A prompt (plus the tokens asked for) does not fit the model's context window."""

    type = "context_length_exceeded"


class DeployError(BadRequest):
    """The code could not be imported or validated."""

    type = "deploy_error"


class Unauthorized(StratusError):
    status = 401
    type = "unauthorized"


class Forbidden(StratusError):
    status = 403
    type = "forbidden"


class QuotaExceeded(Forbidden):
    """A namespace's static cap (replicas, memory) would be exceeded: retrying cannot help."""

    type = "quota_exceeded"


class NotFound(StratusError):
    status = 404
    type = "not_found"


class MethodNotAllowed(StratusError):
    """A route that exists, asked with a method it does not serve; ``allow`` lists those it
    does (the ``Allow`` header)."""

    status = 405
    type = "method_not_allowed"

    def __init__(self, message: str, *, allow: tuple[str, ...]) -> None:
        super().__init__(message)
        self.allow = allow


class Conflict(StratusError):
    status = 409
    type = "conflict"


class Unprocessable(StratusError):
    """Well-formed, but in conflict with what the server already holds (an idempotency key
    reused with another body)."""

    status = 422
    type = "unprocessable"


class IdempotencyConflict(Unprocessable):
    type = "idempotency_conflict"


class BodyTimeout(StratusError):
    """The client did not send its request (headers or body) in time."""

    status = 408
    type = "body_timeout"


class PayloadTooLarge(StratusError):
    status = 413
    type = "payload_too_large"


class Shed(StratusError):
    """Queue full: the request was refused before it used any capacity."""

    status = 429
    type = "overloaded"


class RateLimited(Shed):
    """A key's or a namespace's request rate is over its limit."""

    type = "rate_limited"


class QuotaFull(Shed):
    """The namespace is using all of a quota right now (requests in flight, replicas): a
    retry later can pass, unlike ``QuotaExceeded``."""

    type = "quota_exceeded"


class HandlerError(StratusError):
    status = 500
    type = "handler_error"


class UnencodableOutput(HandlerError):
    """The handler returned something the protocol in use cannot carry: the handler's fault,
    so a 500 like any handler failure."""

    type = "unencodable_output"


class ReplicaLost(StratusError):
    """The replica serving the request died or stopped answering."""

    status = 502
    type = "replica_failed"
    # False only when the replica is known to have died before it took the request (it
    # never acknowledged it, or it was gone before the request was sent): safe to resend.
    reached_handler = True
    # False when the request was never written: its replica was already gone (a retry's
    # ``connect`` failure, where a loss of a request that was written is ``replica_lost``).
    sent = True


class OutOfMemory(ReplicaLost):
    """The handler went over the replica's memory limit: the kernel killed the replica, or
    an allocation was refused. The handler's doing, so a 500 like any handler failure."""

    status = 500
    type = "out_of_memory"


class Unavailable(StratusError):
    status = 503
    type = "unavailable"


class DeploymentFailed(Unavailable):
    """The revision cannot start (its init fails); retried with back-off."""

    type = "deployment_failed"


class RequestTimeout(StratusError):
    status = 504
    type = "timeout"

    def __init__(self, message: str, *, by_caller: bool = False, retry_after: float | None = None,
                 detail: str | None = None) -> None:
        super().__init__(message, retry_after=retry_after, detail=detail)
        # The caller's own deadline ended it, before the revision's ``timeout_s`` would have:
        # that says nothing of the replica (no outlier ejection, no failed canary).
        self.by_caller = by_caller


class IntegrityError(StratusError):
    """Stored bytes failed their integrity check (tampered with, truncated or corrupted);
    they are never served."""

    status = 500
    type = "integrity_error"


class InsufficientStorage(StratusError):
    """A write found the data dir's disk (or the database's) full: nothing was written, what
    was written before is intact, and the same request succeeds once space is freed."""

    status = 507
    type = "insufficient_storage"


_SQLITE_FULL = 13  # sqlite3's SQLITE_FULL: "database or disk is full"
_PG_DISK_FULL = "53100"  # PostgreSQL's disk_full SQLSTATE
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def storage_full(exc: BaseException) -> InsufficientStorage | None:
    """The 507 for an exception a full disk caused (the disk's own error anywhere in its
    chain: an OSError, SQLite's SQLITE_FULL, PostgreSQL's disk_full), else None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, InsufficientStorage):
            return current
        full = (isinstance(current, OSError) and current.errno in _FULL_ERRNOS) \
            or getattr(current, "sqlite_errorcode", None) == _SQLITE_FULL \
            or getattr(current, "sqlstate", None) == _PG_DISK_FULL \
            or getattr(current, "pgcode", None) == _PG_DISK_FULL
        if full:
            return InsufficientStorage(f"the server's storage is full: {current}; free space "
                                       "on its data dir and try again")
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return None


_BY_TYPE: dict[str, type[StratusError]] = {
    cls.type: cls
    for cls in (
        BadRequest,
        InvalidJSON,
        InvalidTensor,
        UnencodableOutput,
        ContextLengthExceeded,
        DeployError,
        NotFound,
        Unprocessable,
        IdempotencyConflict,
        Shed,
        HandlerError,
        ReplicaLost,
        OutOfMemory,
        Unavailable,
        DeploymentFailed,
        RequestTimeout,
        InsufficientStorage,
    )
}


def error_from_type(error_type: str, message: str, detail: str | None = None) -> StratusError:
    """Rebuild an error that crossed a process boundary as (type, message)."""
    cls = _BY_TYPE.get(error_type, HandlerError)
    return cls(message, detail=detail)


def unknown_deployment(name: str, known: Iterable[str]) -> NotFound:
    """The 404 for a deployment that does not exist, suggesting the closest of ``known``
    (the caller's namespace's deployments only: another's names are not to be told)."""
    close = get_close_matches(name, list(known), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return NotFound(f"deployment {name!r} not found{hint}")
