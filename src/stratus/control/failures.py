"""A revision's start-up failures: the backoff before its next replica, the requests held for
it failed at once, and its status in the store."""

from __future__ import annotations

import logging
import time

from stratus.control.unit import DeploymentUnit, LiveRevision
from stratus.control.writes import MetadataWrites
from stratus.dispatch.pool import FailureState
from stratus.errors import DeploymentFailed
from stratus.resilience.circuit import init_backoff
from stratus.store.metadata import RevisionStatus

log = logging.getLogger("stratus.reconciler")


def record_failure(writes: MetadataWrites, max_backoff_s: float, unit: DeploymentUnit,
                   live: LiveRevision, error: str, detail: str | None) -> None:
    """A replica of ``live`` could not start: back off before the next attempt, and fail
    the requests held for a revision that has no ready replica."""
    pool = live.pool
    count = pool.failure.count + 1 if pool.failure is not None else 1
    backoff = init_backoff(count, max_backoff_s)
    pool.failure = FailureState(error, detail, count, time.monotonic() + backoff)
    log.error("deployment %s revision %d: %s (attempt %d, next in %.0fs)%s", unit.name,
              live.number, error, count, backoff, f"\n{detail}" if detail else "")
    if not pool.ready:
        pool.fail_waiters(DeploymentFailed(
            f"deployment {unit.name!r} revision {live.number} cannot start: {error}",
            retry_after=backoff, detail=detail,
        ))
    writes.set_revision_status(unit.namespace, unit.name, live.number,
                               RevisionStatus.FAILED, error)


def record_recovery(writes: MetadataWrites, unit: DeploymentUnit, live: LiveRevision) -> None:
    writes.set_revision_status(unit.namespace, unit.name, live.number,
                               RevisionStatus.READY, None)
