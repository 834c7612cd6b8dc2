"""How much of a deployment async work may hold, and the queue length the autoscaler sees."""

from __future__ import annotations

import math
from collections.abc import Mapping

from stratus.dispatch.dispatcher import Dispatcher


def async_capacity(dispatcher: Dispatcher, namespace: str, deployment: str, share: float) -> int:
    """Attempts the deployment may run at once: ``share`` of the slots its ready replicas
    have, and at least one, so that queued work scales a deployment up from zero (the one
    attempt waits in the pool, and the activator starts a replica for it). The rest of the
    slots stay free for synchronous calls; more replicas, as the backlog asks for, mean more
    async slots."""
    route = dispatcher.routes.get((namespace, deployment))
    if route is None:
        return 1  # unknown here: the attempt fails at once with the dispatcher's 404
    slots = sum(len(pool.ready) * pool.limits.max_concurrency for pool in route.pools.values())
    return max(1, math.floor(slots * share))


def set_backlog(dispatcher: Dispatcher, pending: Mapping[tuple[str, str], int]) -> None:
    """Tell each deployment's primary pool how many invocations wait in the queue: the
    autoscaler counts them as demand, as KEDA scales on a queue's length."""
    for key, route in dispatcher.routes.items():
        route.primary.backlog = pending.get(key, 0)
