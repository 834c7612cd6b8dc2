"""The host memory budget: what a new replica is expected to take, and what to evict to make
room: decrypted model copies in memory that no replica maps, then idle replicas of other
deployments (least recently used first), with the copies only they mapped. A copy on disk is
page cache, which the kernel reclaims: only the pages replicas map are charged, in their PSS.
``plan_room`` decides; ``HostBudget`` applies its decision to the pools and the cache."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stratus.dispatch.pool import PoolReplica, ReplicaState
from stratus.errors import Unavailable

if TYPE_CHECKING:
    from stratus.control.unit import DeploymentUnit, LiveRevision
    from stratus.store.artifacts import ArtifactStore

log = logging.getLogger("stratus.density")

MIB = 1 << 20
DEFAULT_ESTIMATE = 256 * MIB  # a replica never seen before, with no declared memory
PLAIN = "plain:"  # the key prefix of a decrypted copy among the residents


@dataclass(frozen=True)
class Resident:
    """A running replica, or a decrypted copy of a blob, as the budget sees it."""

    key: str
    charge: int  # bytes: a replica's PSS (less its share of copies) or estimate; a copy's size
    last_used: float
    # A replica: idle, of another deployment, and above that deployment's floor. A copy: of a
    # model that no replica about to start needs; dropped only once no replica maps it.
    evictable: bool
    holds: frozenset[str] = frozenset()  # the keys of the copies a replica maps


def estimate(declared_mb: int | None, observed: Iterable[int]) -> int:
    """A revision's next replica: its declared limit, else the most a sibling used."""
    if declared_mb:
        return declared_mb * MIB
    return max((value for value in observed if value > 0), default=DEFAULT_ESTIMATE)


def plan_room(need: int, budget: int, residents: list[Resident]) -> list[str] | None:
    """Keys to evict so ``need`` more bytes fit within ``budget``; None if it cannot fit.

    Copies no replica maps go first (dropping one stops nothing), then idle replicas, least
    recently used first; a replica's eviction frees the copies that only it mapped."""
    used = sum(r.charge for r in residents)
    if used + need <= budget:
        return []
    holders = Counter(key for r in residents for key in r.holds)
    copies = {r.key: r for r in residents if not r.holds and r.key.startswith(PLAIN)}
    unheld = sorted((r for r in copies.values() if r.evictable and not holders[r.key]),
                    key=lambda r: r.last_used)
    replicas = sorted((r for r in residents if r.evictable and r.key not in copies),
                      key=lambda r: r.last_used)
    evict: list[str] = []
    for resident in [*unheld, *replicas]:
        if resident.key in evict:
            continue  # a copy its last holder's eviction already freed
        evict.append(resident.key)
        used -= resident.charge
        for key in resident.holds:
            holders[key] -= 1
            copy = copies.get(key)
            if copy is not None and copy.evictable and not holders[key] and key not in evict:
                evict.append(key)
                used -= copy.charge
        if used + need <= budget:
            return evict
    return None


def replica_charge(pss: int, shmem: int, copies: int) -> int:
    """A replica's own share of memory: its PSS, less the part of it that is its share of the
    decrypted copies it maps (each copy is charged whole, once, as a resident of its own)."""
    return max(0, pss - min(shmem, copies))


def drop_soon(copies: ArtifactStore, digest: str) -> None:
    """Unmapping and unlinking a large file takes milliseconds: off the event loop."""
    try:
        asyncio.get_running_loop().run_in_executor(None, copies.drop_copy, digest)
    except RuntimeError:  # no loop running (a test of the policy)
        copies.drop_copy(digest)


def model_digests(live: LiveRevision) -> set[str]:
    return {entry["sha256"] for model in live.models for entry in model["files"].values()}


def unmapped_bytes(live: LiveRevision, units: Iterable[DeploymentUnit]) -> int:
    """The model files of ``live`` that no running replica maps: a copy on disk is page cache,
    charged to no one while nothing maps it, and the next replica brings those pages into its
    PSS (its estimate does not count them when it has no sibling yet). A file some replica
    maps already adds no memory: its pages are shared."""
    mapped: set[str] = set()
    for unit in units:
        for other in unit.revisions.values():
            if any(r.state is not ReplicaState.DRAINING for r in other.pool.replicas.values()):
                mapped |= model_digests(other)
    sizes = {entry["sha256"]: int(entry.get("size") or 0)
             for model in live.models for entry in model["files"].values()}
    return sum(size for digest, size in sizes.items() if digest not in mapped)


def release_copies(copies: ArtifactStore, retired: LiveRevision,
                   units: Iterable[DeploymentUnit]) -> None:
    """The decrypted copies of a retired revision's models go with it (memory in tmpfs, or
    plaintext on disk), unless another live revision loads the same files."""
    digests = model_digests(retired)
    for unit in units:
        for live in unit.revisions.values():
            digests -= model_digests(live)
    for digest in digests:
        drop_soon(copies, digest)


class HostBudget:
    def __init__(self, budget: int, copies: ArtifactStore | None = None) -> None:
        self.budget = budget  # bytes; 0: no budget
        self.copies = copies
        self.warned: set[tuple[str, str]] = set()

    def estimate(self, live: LiveRevision) -> int:
        observed = (r.channel.memory.pss for r in live.pool.replicas.values() if r.channel is not None)
        return estimate(live.runtime.memory_mb, observed)

    def residents(self, unit: DeploymentUnit, units: list[DeploymentUnit],
                  target: LiveRevision | None = None, copies: dict[str, int] | None = None,
                  ) -> tuple[list[Resident], dict[str, tuple[LiveRevision, PoolReplica]]]:
        """Every replica and decrypted copy; ``target`` is the revision about to start one."""
        copies = copies or {}
        residents: list[Resident] = []
        where: dict[str, tuple[LiveRevision, PoolReplica]] = {}
        copy_used: dict[str, float] = {}  # a live revision's copy -> when a replica last used it
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
                digests = model_digests(live) & copies.keys()
                mapped = sum(copies[digest] for digest in digests)
                holds = frozenset(PLAIN + digest for digest in digests)
                for digest in digests:
                    copy_used.setdefault(digest, 0.0)
                for replica in live.pool.replicas.values():
                    for digest in digests:
                        copy_used[digest] = max(copy_used[digest], replica.last_used)
                    if replica.state is ReplicaState.DRAINING:
                        continue  # on its way out
                    memory = replica.channel.memory if replica.channel is not None else None
                    charge = replica_charge(memory.pss, memory.shmem, mapped) \
                        if memory is not None and memory.pss else self.estimate(live)
                    evictable = other is not unit and id(replica) in spare
                    residents.append(Resident(replica.replica_id, charge, replica.last_used,
                                              evictable, holds))
                    where[replica.replica_id] = (live, replica)
        needed = model_digests(target) if target is not None else set()
        for digest, size in copies.items():
            # Only a live revision's model copy may go: a replica's next start decrypts it
            # again; any other copy (a job's dataset or model) is charged but kept.
            evictable = digest in copy_used and digest not in needed
            residents.append(Resident(PLAIN + digest, size, copy_used.get(digest, 0.0), evictable))
        return residents, where

    def make_room(self, unit: DeploymentUnit, live: LiveRevision, units: list[DeploymentUnit]) -> bool:
        """Room for one more replica of ``live``, evicting decrypted copies nobody maps and
        idle replicas of other deployments if need be. When nothing can make room, its held
        requests get a 503 (and the host no OOM)."""
        if not self.budget:
            return True
        copies = self.copies.plain.resident() if self.copies is not None else {}
        need = self.estimate(live)
        if self.copies is not None and self.copies.plain.in_memory:
            # A copy it needs that is not there yet is decrypted before the replica starts.
            need += sum(int(entry.get("size") or 0) for model in live.models
                        for entry in model["files"].values() if entry["sha256"] not in copies)
        elif live.models:
            need += unmapped_bytes(live, units)
        residents, where = self.residents(unit, units, live, copies)
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
            if key.startswith(PLAIN):
                assert self.copies is not None
                log.info("dropping the decrypted copy of blob %s to make room for %s",
                         key[len(PLAIN):len(PLAIN) + 12], unit.name)
                drop_soon(self.copies, key[len(PLAIN):])
                continue
            victim_live, victim = where[key]
            log.info("evicting idle replica %s to make room for %s", key, unit.name)
            victim_live.pool.mark_draining(victim)
            for other in units:
                if victim_live in other.revisions.values():
                    # Its policy still remembers recent load; without a request it must not
                    # start again (and evict in turn) until a request asks for it.
                    other.evicted = True
        return True
