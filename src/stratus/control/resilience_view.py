"""What a deployment's status shows of its reliability policies: each revision's start-up
circuit, its replicas ejected as outliers, and its adaptive concurrency limit."""

from __future__ import annotations

import math
from typing import Any

from stratus.dispatch.pool import PoolReplica, RevisionPool
from stratus.resilience.circuit import CircuitState, init_circuit


def circuit_state(pool: RevisionPool, now: float) -> CircuitState:
    failure = pool.failure
    if failure is None:
        return CircuitState.CLOSED
    return init_circuit(failure.count, failure.retry_at, now)


def circuit_view(pool: RevisionPool, now: float) -> dict[str, Any]:
    """The start-up circuit: ``retry_in_s`` is when the next start may begin (what a 503's
    ``Retry-After`` says), ``failures`` the starts failed in a row."""
    failure = pool.failure
    return {
        "state": circuit_state(pool, now).value,
        "failures": failure.count if failure is not None else 0,
        "retry_in_s": round(max(0.0, failure.retry_at - now), 1) if failure is not None else None,
    }


def replica_health(pool: RevisionPool, replica: PoolReplica, now: float) -> dict[str, Any]:
    """A replica's outlier state: ``closed`` (picked as usual), ``open`` (ejected until
    ``ejected_for_s`` passes) or ``half_open`` (its next request is the probe)."""
    ejection = pool.ejection
    health = ejection.detector.replicas.get(replica) if ejection is not None else None
    if health is None:
        return {"outlier": CircuitState.CLOSED.value}
    view: dict[str, Any] = {"outlier": health.state.value}
    if health.state is not CircuitState.CLOSED:
        view.update(ejected_for_s=round(max(0.0, health.until - now), 1),
                    ejections=health.ejections, ejected_because=health.reason)
    return view


def shedding_view(pool: RevisionPool) -> dict[str, Any] | None:
    """The adaptive limit and what it learnt (None when adaptive shedding is off)."""
    admission = pool.admission
    if admission is None:
        return None
    limit = admission.limit
    return {
        "limit": math.floor(limit.limit),
        "admitted": limit.inflight,
        "baseline_ms": round(limit.baseline_s * 1000, 3) if limit.baseline_s is not None else None,
        "latency_ms": round(limit.last_latency_s * 1000, 3)
        if limit.last_latency_s is not None else None,
        "shed": {priority.name.lower(): count for priority, count in admission.shed.items()},
    }


def revision_view(pool: RevisionPool, now: float) -> dict[str, Any]:
    ejection = pool.ejection
    return {
        "circuit": circuit_view(pool, now),
        "ejected": ejection.detector.ejected if ejection is not None else 0,
        "ejections": ejection.detector.ejections_total if ejection is not None else 0,
        "shedding": shedding_view(pool),
    }
