"""In-memory state of one deployment: its live revisions, their pools, and its policy."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from stratus.autoscale.build import build_policy
from stratus.autoscale.policy import Decision, ReplicaCounts, ScalingPolicy
from stratus.backends.base import CodeSpec
from stratus.control.resilience_view import replica_health, revision_view
from stratus.control.routing import Routing
from stratus.dispatch.admission import admission_for
from stratus.dispatch.ejection import ejection_for
from stratus.dispatch.pool import PoolLimits, ReplicaState, RevisionPool
from stratus.sdk.batching import BatchSizeHistogram
from stratus.spec import RuntimeSpec, ScalingSpec, target_concurrency

HISTORY = 600  # decisions kept per deployment: ten minutes at one tick a second
# A kept decision: (t, desired, mode, ready, starting, reason); made a dict only when read.
Decided = tuple[float, int, str, int, int, str]
DECIDED_FIELDS = ("t", "desired", "mode", "ready", "starting", "reason")
EXITS_KEPT = 20  # replica ends kept per deployment (crashes, memory limits), for its status


@dataclass
class LiveRevision:
    number: int
    runtime: RuntimeSpec
    code: CodeSpec
    pool: RevisionPool
    created_at: datetime
    models: list[dict[str, Any]] = field(default_factory=list)  # laid out for replicas to load


def pool_limits(runtime: RuntimeSpec, scaling: ScalingSpec) -> PoolLimits:
    return PoolLimits(
        max_concurrency=runtime.max_concurrency,
        timeout_s=runtime.timeout_s,
        max_queued=scaling.max_queued,
        queue_timeout_s=scaling.queue_timeout_s,
        retries=scaling.retries,
    )


@dataclass
class DeploymentUnit:
    namespace: str
    name: str
    scaling: ScalingSpec
    created_at: datetime
    updated_at: datetime
    revisions: dict[int, LiveRevision] = field(default_factory=dict)
    routing: Routing = field(default_factory=Routing)
    latest: int = 0
    demand: dict[int, float] = field(default_factory=dict)  # per revision, at the last tick
    policy: ScalingPolicy | None = None
    decision: Decision = field(default_factory=lambda: Decision(0, "no decision yet"))
    decided_at: float | None = None
    evicted: bool = False  # replicas taken for room: start again only on a request
    # Tuples, not dicts: 600 dicts a deployment were 160 KiB more (the soak's RSS slope).
    history: deque[Decided] = field(default_factory=lambda: deque(maxlen=HISTORY))
    batch_sizes: BatchSizeHistogram = field(default_factory=BatchSizeHistogram)  # @stratus.batch
    # Replicas that ended without being asked to, newest last: {"replica", "at", "reason",
    # "out_of_memory"}.
    exits: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=EXITS_KEPT))
    _policy_key: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def stable(self) -> int | None:
        return self.routing.stable

    @property
    def traffic(self) -> dict[int, int]:
        return self.routing.traffic

    def stable_revision(self) -> LiveRevision | None:
        return self.revisions.get(self.stable) if self.stable is not None else None

    def member_pools(self) -> list[RevisionPool]:
        """The pools serving client traffic (not the shadow's copies)."""
        return [self.revisions[n].pool for n in sorted(self.routing.members())
                if n in self.revisions]

    def latest_revision(self) -> LiveRevision | None:
        return self.revisions.get(self.latest)

    def effective_target(self) -> float:
        serving = self.stable_revision() or self.latest_revision()
        if serving is None:
            return 1.0
        return target_concurrency(self.scaling, serving.runtime)

    def rebuild_policy(self) -> None:
        """Build the policy anew when its settings or target changed; keep it (and what it
        learned, such as the idle-time histogram) otherwise."""
        target = self.effective_target()
        key = f"{self.scaling.model_dump_json()}|{target}"
        if key != self._policy_key or self.policy is None:
            self.policy = build_policy(self.scaling, target)
            self._policy_key = key
        for live in self.revisions.values():
            pool, scaling = live.pool, self.scaling
            pool.limits = pool_limits(live.runtime, scaling)
            pool.ejection = ejection_for(scaling.outliers, pool.ejection, pool.ready)
            pool.admission = admission_for(scaling.shedding, pool.admission,
                                           pool.limits.max_concurrency, scaling.max_queued,
                                           scaling.max_replicas)

    def record(self, decision: Decision, now: float, counts: ReplicaCounts) -> None:
        self.decision = decision
        self.decided_at = now
        self.history.append((round(now, 3), decision.desired, decision.mode, counts.ready,
                             counts.starting, decision.reason))

    def decisions(self) -> list[dict[str, Any]]:
        """The kept decisions, oldest first, as the API shows them."""
        return [dict(zip(DECIDED_FIELDS, entry, strict=True)) for entry in self.history]

    def memory_bytes(self) -> int:
        """The PSS of its replicas: shared weights count once across them."""
        return sum(replica.channel.memory.pss for live in self.revisions.values()
                   for replica in live.pool.replicas.values() if replica.channel is not None)

    def status(self) -> tuple[str, str | None]:
        rollout = self.routing.rollout
        if rollout is not None and rollout.phase in ("warming", "running"):
            return "deploying", (f"rolling out revision {rollout.target}: {rollout.phase} at "
                                 f"{rollout.weight}% of traffic")
        stable = self.stable_revision()
        if stable is not None and stable.pool.failure is not None:
            return "failed", stable.pool.failure.reason
        latest = self.latest_revision()
        if rollout is not None and rollout.target == self.latest and rollout.phase == "rolled_back":
            return "failed", f"revision {self.latest} was rolled back: {rollout.reason}"
        if latest is not None and latest.pool.failure is not None:
            return "failed", latest.pool.failure.reason
        if rollout is not None and rollout.phase == "watching":
            # Deployed and serving: the watch can still send traffic back.
            return "ready", f"revision {rollout.target} serves all traffic, {rollout.reason}"
        return "ready", None

    def view(self) -> dict[str, Any]:
        """The public JSON object of ``GET /api/deployments/{name}``."""
        counts = {state.value: 0 for state in (ReplicaState.READY, ReplicaState.STARTING,
                                               ReplicaState.DRAINING)}
        items: list[dict[str, Any]] = []
        now = time.monotonic()
        for live in sorted(self.revisions.values(), key=lambda r: r.number):
            for replica in live.pool.replicas.values():
                if replica.state.value in counts:
                    counts[replica.state.value] += 1
                channel = replica.channel
                items.append({
                    "id": replica.replica_id,
                    "revision": live.number,
                    "state": replica.state.value,
                    "pid": replica.pid,
                    "inflight": replica.inflight,
                    "init_ms": round(replica.init_ms, 2) if replica.init_ms is not None else None,
                    "age_s": round(now - replica.created_at, 1),
                    "rss_mb": round(channel.memory.rss / 2**20, 1) if channel else None,
                    "pss_mb": round(channel.memory.pss / 2**20, 1) if channel else None,
                    **replica_health(live.pool, replica, now),
                })
        status, reason = self.status()
        # A revision recorded without promotion is not live: describe the stable one then.
        latest = self.latest_revision() or self.stable_revision()
        failure = latest.pool.failure if latest is not None else None
        return {
            "namespace": self.namespace,
            "name": self.name,
            "revision": self.latest,
            "serving_revision": self.stable,
            "traffic": {str(rev): weight for rev, weight in sorted(self.routing.traffic.items())},
            "status": status,
            "reason": reason,
            "replicas": {**counts, "desired": self.decision.desired, "items": items},
            "queued": sum(len(live.pool.waiters) for live in self.revisions.values()),
            "memory_mb": round(self.memory_bytes() / 2**20, 1),
            "models": [{k: m[k] for k in ("ref", "version", "format")} for m in latest.runtime.models]
            if latest is not None else [],
            "autoscaler": {
                "policy": self.scaling.policy,
                "mode": self.decision.mode,
                "desired": self.decision.desired,
                "ready": counts[ReplicaState.READY.value],
                "target_concurrency": round(self.effective_target(), 3),
                "reason": self.decision.reason,
                "decided_at": self.decided_at,
            },
            "scaling": self.scaling.model_dump(),
            "rollout": self.routing.strategy.model_dump(),
            "runtime": _public_runtime(latest.runtime) if latest is not None else None,
            "handler": _handler_view(latest.pool.meta) if latest is not None else None,
            "last_error": (
                {"message": failure.reason, "detail": failure.detail, "attempts": failure.count}
                if failure is not None else None
            ),
            "replica_exits": list(self.exits),
            # Per live revision: its start-up circuit, outliers ejected, adaptive limit.
            "resilience": {str(live.number): revision_view(live.pool, now)
                           for live in sorted(self.revisions.values(), key=lambda r: r.number)},
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


def _public_runtime(runtime: RuntimeSpec) -> dict[str, Any]:
    data = runtime.model_dump()
    data["env"] = sorted(runtime.env)  # names only: values may be secrets
    return data


def _handler_view(meta: dict[str, Any]) -> dict[str, Any]:
    options = meta.get("options") or {}
    return {
        "kind": meta.get("kind"),
        "is_async": meta.get("is_async"),
        "inputs": options.get("inputs") or [],
        "outputs": options.get("outputs") or [],
    }
