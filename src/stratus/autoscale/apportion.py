"""How a deployment's desired replicas split between the revisions that share its traffic:
pure, so the split can be tested apart from the reconciler."""

from __future__ import annotations

import math
from collections.abc import Mapping


def apportion(total: int, weights: Mapping[int, int], demand: Mapping[int, float]) -> dict[int, int]:
    """Each revision gets its share of ``total``: the larger of its traffic weight and its
    share of the observed ``demand`` (sticky keys and pinned requests need not follow the
    weights), rounded up. A revision with demand keeps at least one replica, so one
    reached only by ``x-stratus-revision`` (weight 0) still scales from zero."""
    observed = sum(demand.values())
    shares: dict[int, int] = {}
    for revision in {*weights, *demand}:
        weight = weights.get(revision, 0) / 100
        load = demand.get(revision, 0.0)
        share = max(weight, load / observed) if observed > 0 else weight
        replicas = math.ceil(total * share - 1e-9)
        if load > 0:
            replicas = max(replicas, 1)
        shares[revision] = replicas
    return shares
