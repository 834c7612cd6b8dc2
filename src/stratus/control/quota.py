"""Namespace quotas in the control plane. A deploy or patch that would let a namespace claim
more replicas or memory than its quota allows is refused (403: retrying cannot help), checked
in the transaction that records it; the reconciler never starts a replica beyond what the
namespace may run."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from stratus.control.density import DEFAULT_ESTIMATE, MIB
from stratus.errors import QuotaExceeded, QuotaFull
from stratus.security.quotas import Admit, Footprint, Quotas, deploy_problem, replica_room
from stratus.spec import RuntimeSpec, ScalingSpec

if TYPE_CHECKING:
    from stratus.control.unit import DeploymentUnit, LiveRevision

log = logging.getLogger("stratus.quota")

UNDECLARED_MB = DEFAULT_ESTIMATE // MIB  # a replica with no memory_mb, as the host budget counts it
RETRY_S = 5.0


class NamespaceCaps:
    def __init__(self, quotas: Quotas) -> None:
        self.quotas = quotas
        self.warned: set[str] = set()

    def admission(self, namespace: str, name: str, scaling: ScalingSpec,
                  runtime: RuntimeSpec) -> Admit | None:
        """The check of the namespace's caps that recording this deployment must pass, or
        None when the namespace has none. The store runs it on the footprints it reads inside
        the write's transaction, which it holds alone among the namespace's deploys: two
        deploys at once cannot both fit into room for one (a check made before the write,
        on what this server holds in memory, let every concurrent deploy pass)."""
        quota = self.quotas.for_namespace(namespace)
        if not quota.max_replicas and not quota.max_memory_mb:
            return None
        wanted = Footprint(name, scaling.max_replicas, runtime.memory_mb)

        def admit(recorded: list[Footprint]) -> None:
            problem = deploy_problem(quota, namespace, wanted, recorded, UNDECLARED_MB)
            if problem is not None:
                raise QuotaExceeded(problem)  # 403; the transaction writes nothing

        return admit

    def allowed(self, unit: DeploymentUnit, live: LiveRevision, wanted: int,
                units: Iterable[DeploymentUnit]) -> int:
        """How many of ``wanted`` new replicas of ``live`` the namespace may start now. Held
        requests of a revision with no replica at all are answered 429 when it may start none,
        rather than wait for their queue timeout."""
        quota = self.quotas.for_namespace(unit.namespace)
        if not quota.max_replicas and not quota.max_memory_mb:
            return wanted
        running = running_mb = 0
        for other in units:
            if other.namespace != unit.namespace:
                continue
            for revision in other.revisions.values():
                count = len(revision.pool.replicas)
                running += count
                running_mb += count * (revision.runtime.memory_mb or UNDECLARED_MB)
        room = replica_room(quota, running, running_mb, live.runtime.memory_mb or UNDECLARED_MB)
        if room is None or room >= wanted:
            self.warned.discard(unit.namespace)
            return wanted
        message = (f"namespace {unit.namespace!r} is at its quota ({running} replicas, "
                   f"{running_mb} MB): no room for another replica of {unit.name!r}")
        if not live.pool.replicas and live.pool.waiters:
            live.pool.fail_waiters(QuotaFull(message, retry_after=RETRY_S))
        if unit.namespace not in self.warned:  # once, not on every tick that asks again
            self.warned.add(unit.namespace)
            log.warning("%s", message)
        return room
