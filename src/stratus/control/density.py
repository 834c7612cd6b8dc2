"""The host memory budget: what a new replica is expected to take, and which idle replicas of
other deployments to evict (least recently used first) to make room. ``plan_room`` decides;
``HostBudget`` applies its decision to the pools."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stratus.dispatch.pool import PoolReplica, ReplicaState
from stratus.errors import Unavailable

if TYPE_CHECKING:
    from stratus.control.unit import DeploymentUnit, LiveRevision

log = logging.getLogger("stratus.density")

MIB = 1 << 20
DEFAULT_ESTIMATE = 256 * MIB  # a replica never seen before, with no declared memory


@dataclass(frozen=True)
class Resident:
    """A running replica, as the budget sees it."""

    key: str
    charge: int  # bytes: its PSS, or its estimate before the first heartbeat
    last_used: float
    evictable: bool  # idle, of another deployment, and above that deployment's floor


def estimate(declared_mb: int | None, observed: Iterable[int]) -> int:
    """A revision's next replica: its declared limit, else the most a sibling used."""
    if declared_mb:
        return declared_mb * MIB
    return max((value for value in observed if value > 0), default=DEFAULT_ESTIMATE)


def plan_room(need: int, budget: int, residents: list[Resident]) -> list[str] | None:
    """Keys to evict so ``need`` more bytes fit within ``budget``; None if it cannot fit."""
    used = sum(r.charge for r in residents)
    if used + need <= budget:
        return []
    evict: list[str] = []
    for resident in sorted((r for r in residents if r.evictable), key=lambda r: r.last_used):
        evict.append(resident.key)
        used -= resident.charge
        if used + need <= budget:
            return evict
    return None


class HostBudget:
    def __init__(self, budget: int) -> None:
        self.budget = budget  # bytes; 0: no budget
        self.warned: set[tuple[str, str]] = set()

    def estimate(self, live: LiveRevision) -> int:
        observed = (r.channel.memory.pss for r in live.pool.replicas.values() if r.channel is not None)
        return estimate(live.runtime.memory_mb, observed)

    def residents(self, unit: DeploymentUnit, units: list[DeploymentUnit],
                  ) -> tuple[list[Resident], dict[str, tuple[LiveRevision, PoolReplica]]]:
        residents: list[Resident] = []
        where: dict[str, tuple[LiveRevision, PoolReplica]] = {}
        for other in units:
            floor = max(other.scaling.min_replicas, other.scaling.provisioned_replicas)
            ready = [(live, replica) for live in other.revisions.values()
                     for replica in live.pool.replicas.values()
                     if replica.state is ReplicaState.READY]
            # Only as many as stand above the deployment's floor, its least recently used.
            idle = sorted((pair for pair in ready if pair[1].inflight == 0),
                          key=lambda pair: pair[1].last_used)
            spare = {id(replica) for _, replica in idle[: max(0, len(ready) - floor)]}
            for live in other.revisions.values():
                for replica in live.pool.replicas.values():
                    if replica.state is ReplicaState.DRAINING:
                        continue  # on its way out
                    pss = replica.channel.memory.pss if replica.channel is not None else 0
                    evictable = other is not unit and id(replica) in spare
                    residents.append(Resident(replica.replica_id, pss or self.estimate(live),
                                              replica.last_used, evictable))
                    where[replica.replica_id] = (live, replica)
        return residents, where

    def make_room(self, unit: DeploymentUnit, live: LiveRevision, units: list[DeploymentUnit]) -> bool:
        """Room for one more replica of ``live``, evicting idle replicas of other deployments
        if need be. When nothing can make room, its held requests get a 503 (and the host no
        OOM)."""
        if not self.budget:
            return True
        need = self.estimate(live)
        residents, where = self.residents(unit, units)
        evict = plan_room(need, self.budget, residents)
        if evict is None:
            used = sum(r.charge for r in residents)
            message = (f"the host memory budget ({self.budget // MIB} MiB) has no room for "
                       f"another replica of {unit.name!r} (~{need // MIB} MiB; "
                       f"{used // MIB} MiB in use)")
            if live.pool.waiters:
                live.pool.fail_waiters(Unavailable(message, retry_after=5.0))
            if unit.key not in self.warned:  # once, not every tick it keeps asking
                self.warned.add(unit.key)
                log.warning("%s", message)
            return False
        self.warned.discard(unit.key)
        for key in evict:
            victim_live, victim = where[key]
            log.info("evicting idle replica %s to make room for %s", key, unit.name)
            victim_live.pool.mark_draining(victim)
            for other in units:
                if victim_live in other.revisions.values():
                    # Its policy still remembers recent load; without a request it must not
                    # start again (and evict in turn) until a request asks for it.
                    other.evicted = True
        return True
