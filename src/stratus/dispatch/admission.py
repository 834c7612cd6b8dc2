"""Adaptive load shedding on the request path: a revision pool admits a request only under its
learnt concurrency limit (``resilience/concurrency_limit.py``), in front of its queue, and
refuses the rest at once with 429."""

from __future__ import annotations

import time

from stratus.errors import Shed
from stratus.resilience.concurrency_limit import ConcurrencyLimit, LimitSettings
from stratus.resilience.priority import SHARES, Priority
from stratus.resilience_spec import SheddingSpec

SHED_RETRY_S = 1.0  # a refused request may come back once the queue has turned over


class Admission:
    """One pool's limit, built from the deployment's ``shedding`` settings and its size."""

    def __init__(self, settings: LimitSettings, key: tuple[object, ...], now: float) -> None:
        self.key = key  # what it was built from: a change builds it anew
        self.limit = ConcurrencyLimit(settings, now)
        self.shed = dict.fromkeys(Priority, 0)  # refused, ever

    def admit(self, deployment: str, priority: Priority) -> Admission:
        """Count the request in (its ticket is this object), or refuse it with ``Shed``."""
        limit = self.limit
        if not limit.try_admit(SHARES[priority]):
            self.shed[priority] += 1
            raise Shed(
                f"deployment {deployment!r} is at its adaptive concurrency limit "
                f"({limit.allowed(SHARES[priority])} requests at once for "
                f"{priority.name.lower()} priority); retry later",
                retry_after=SHED_RETRY_S,
            )
        return self

    def finished(self, now: float, latency_s: float | None, service_s: float | None) -> None:
        self.limit.done(now, latency_s, service_s)


def admission_for(spec: SheddingSpec, current: Admission | None, max_concurrency: int,
                  max_queued: int, max_replicas: int) -> Admission | None:
    """A pool's limit for ``spec`` (None when adaptive shedding is off); unchanged settings
    keep the current one, with what it learnt."""
    if not spec.adaptive:
        return None
    key = (spec, max_concurrency, max_queued, max_replicas)
    if current is not None and current.key == key:
        return current
    capacity = max_replicas * max_concurrency
    floor = spec.min_limit or max_concurrency
    settings = LimitSettings(
        initial_limit=float(spec.initial_limit or capacity),
        min_limit=float(floor),
        max_limit=float(max(floor, capacity + max_queued)),
        tolerance=spec.tolerance,
        window_s=spec.window_s,
    )
    return Admission(settings, key, time.monotonic())
