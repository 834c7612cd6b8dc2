"""What the offline simulator records per deployment, and the metrics and cost derived from it
(pure arithmetic, no I/O)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np

from stratus.cost import Prices, workload_cost


class DecisionRecord(NamedTuple):
    """One policy decision, with the replica counts it saw (as ``DeploymentUnit.record``)."""

    t: float
    desired: int
    mode: str
    ready: int
    starting: int
    reason: str
    source: str  # "tick" (the 1 s reconcile loop) or "activator" (a request had to wait)
    concurrency: float = 0.0  # the sample's average requests in the system (running + queued)


@dataclass
class DeploymentRun:
    """The raw outcome of simulating one deployment."""

    name: str
    invocations: int = 0
    served: int = 0
    cold_starts: int = 0
    shed: int = 0  # refused because max_queued requests were already waiting (live: 429)
    timed_out: int = 0  # waited queue_timeout_s without a slot (live: 503)
    replicas_started: int = 0
    peak_replicas: int = 0
    busy_replica_seconds: float = 0.0
    idle_replica_seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    decisions: list[DecisionRecord] = field(default_factory=list)


@dataclass(frozen=True)
class Metrics:
    invocations: int
    served: int
    cold_starts: int
    cold_start_fraction: float  # of all invocations
    p50_latency_ms: float | None  # None when nothing was served
    p99_latency_ms: float | None
    busy_replica_seconds: float
    idle_replica_seconds: float
    replica_seconds: float
    cost: float
    shed: int
    timed_out: int
    replicas_started: int


def metrics(runs: Iterable[DeploymentRun], prices: Prices, memory_gb: float | None = None) -> Metrics:
    """Aggregate one run (a deployment) or many (the total): counts and seconds add up,
    percentiles come from the pooled latencies."""
    runs = list(runs)
    invocations = sum(r.invocations for r in runs)
    served = sum(r.served for r in runs)
    cold = sum(r.cold_starts for r in runs)
    busy = sum(r.busy_replica_seconds for r in runs)
    idle = sum(r.idle_replica_seconds for r in runs)
    p50 = p99 = None
    if served:
        latencies = np.concatenate([np.asarray(r.latencies_ms, dtype=np.float64) for r in runs])
        p50, p99 = (float(v) for v in np.percentile(latencies, [50.0, 99.0]))
    return Metrics(
        invocations=invocations,
        served=served,
        cold_starts=cold,
        cold_start_fraction=cold / invocations if invocations else 0.0,
        p50_latency_ms=p50,
        p99_latency_ms=p99,
        busy_replica_seconds=busy,
        idle_replica_seconds=idle,
        replica_seconds=busy + idle,
        # Billed requests are the ones that ran; shed and timed-out ones never reached a replica.
        cost=workload_cost(prices, served, busy, idle, memory_gb),
        shed=sum(r.shed for r in runs),
        timed_out=sum(r.timed_out for r in runs),
        replicas_started=sum(r.replicas_started for r in runs),
    )


@dataclass
class SimReport:
    runs: dict[str, DeploymentRun]
    deployments: dict[str, Metrics]
    total: Metrics

    @classmethod
    def build(cls, runs: Iterable[DeploymentRun], prices: Prices,
              memory_gb: float | None = None) -> SimReport:
        by_name = {run.name: run for run in sorted(runs, key=lambda r: r.name)}
        per = {name: metrics([run], prices, memory_gb) for name, run in by_name.items()}
        return cls(by_name, per, metrics(by_name.values(), prices, memory_gb))

    def to_dict(self) -> dict[str, Any]:
        """The totals' keys at the top level, plus ``deployments``: {name: the same keys}."""
        return {**asdict(self.total),
                "deployments": {name: asdict(m) for name, m in self.deployments.items()}}
