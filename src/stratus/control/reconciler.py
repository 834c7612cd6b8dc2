"""The reconciler: brings each revision's running replicas to its share of what the
deployment's policy wants, lets the router move rollouts on, retires revisions that left the
route, and replaces replicas that crash, hang or stop answering. It also receives the
backend's replica events, and keeps each revision's start-up failures and backoff.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from stratus.autoscale.apportion import apportion
from stratus.autoscale.policy import Decision, ReplicaCounts
from stratus.backends.base import Backend, ReplicaHandle, ReplicaSpec
from stratus.config import Settings
from stratus.control.density import MIB, HostBudget, release_copies
from stratus.control.failures import record_failure, record_recovery
from stratus.control.quota import NamespaceCaps
from stratus.control.router import Router
from stratus.control.unit import DeploymentUnit, LiveRevision
from stratus.control.writes import MetadataWrites
from stratus.dispatch.channel import ReplicaChannel
from stratus.dispatch.dispatcher import Dispatcher
from stratus.dispatch.load import combine
from stratus.dispatch.pool import PoolReplica, ReplicaState
from stratus.errors import StratusError
from stratus.models.service import ModelService
from stratus.runtime.messages import ReplicaConfig
from stratus.store.secrets import SecretStore

log = logging.getLogger("stratus.reconciler")

STUCK_GRACE_S = 5.0


@dataclass
class _Entry:
    unit: DeploymentUnit
    live: LiveRevision
    replica: PoolReplica
    handle: ReplicaHandle | None = None
    cancelled: bool = False
    background: bool = False  # runs at the lowest CPU priority (a shadow's replica)


class Reconciler:
    """Reads the controller's ``units`` (it never adds or removes one) and acts through what it
    is given: the backend's replicas, the dispatcher's pools, the router's rollouts, the writes."""

    def __init__(self, *, settings: Settings, units: Mapping[tuple[str, str], DeploymentUnit],
                 backend: Backend, dispatcher: Dispatcher, router: Router, caps: NamespaceCaps,
                 models: ModelService, secrets: SecretStore | None, writes: MetadataWrites) -> None:
        self.settings = settings
        self.units = units
        self.backend = backend
        self.dispatcher = dispatcher
        self.router = router
        self.caps = caps
        self.models = models  # laid out again before each replica starts
        self.secrets = secrets  # revealed to each replica as it starts
        self.writes = writes
        self.entries: dict[str, _Entry] = {}
        self.retired: list[DeploymentUnit] = []
        self.budget = HostBudget(settings.memory_budget_mb * MIB, models.artifacts)
        self._background: set[asyncio.Task[None]] = set()
        # Observers of each new replica: (namespace, deployment, seconds from start to ready).
        self.on_replica_started: list[Callable[[str, str, float], None]] = []

    def _spawn(self, coroutine: object) -> None:
        task = asyncio.ensure_future(coroutine)  # type: ignore[call-overload]
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _all_units(self) -> list[DeploymentUnit]:
        return [*self.units.values(), *self.retired]

    def _is_live(self, unit: DeploymentUnit) -> bool:
        return self.units.get(unit.key) is unit

    # -- periodic work ------------------------------------------------------------
    def tick(self, unit: DeploymentUnit, now: float, wall: float) -> None:
        """``now`` is monotonic (health timers); ``wall`` is the policies' Unix clock."""
        members = unit.routing.members()
        samples = []
        for live in list(unit.revisions.values()):
            sample = live.pool.sample(now, wall)
            if live.number in members:
                samples.append(sample)
                unit.demand[live.number] = sample.average_concurrency + sample.queued
            self._check_health(unit, live, now)
        combined = combine(samples)
        if combined is not None and unit.policy is not None:
            unit.policy.observe(combined)
        self.decide(unit, wall)
        self.reconcile(unit)
        self._collect_retired()

    def restored(self, unit: DeploymentUnit) -> None:
        """A deployment restored at start-up: the replicas a takeover handed this server serve
        its revisions again as they were (no cold start), then it is reconciled as usual."""
        adopted = 0
        for live in unit.revisions.values():
            for handle in self.backend.adoptable(unit.namespace, unit.name, live.number):
                assert handle.channel is not None
                replica = live.pool.add_starting(handle.replica_id)
                self.entries[handle.replica_id] = _Entry(unit, live, replica, handle)
                live.pool.mark_ready(replica, handle.channel, 0.0)
                handle.channel.on_batch_sizes = unit.batch_sizes.merge
                adopted += 1
        if adopted:  # kept until the policy, which starts afresh, decides otherwise
            unit.record(Decision(max(unit.decision.desired, adopted), "handed over by a "
                                 "takeover"), time.time(), ReplicaCounts(adopted, 0))
        self.schedule(unit)

    def schedule(self, unit: DeploymentUnit) -> None:
        """Reconcile ``unit`` soon, once the caller (a backend event, a restore) is done."""
        asyncio.get_running_loop().call_soon(self.reconcile, unit)

    def observe_now(self, unit: DeploymentUnit, now: float, wall: float) -> None:
        """The activator's reading: a request waits, so the policy hears of it at once."""
        combined = combine([pool.instant(now, wall) for pool in unit.member_pools()])
        if combined is not None and unit.policy is not None:
            unit.policy.observe(combined)

    def decide(self, unit: DeploymentUnit, wall: float) -> None:
        pools = unit.member_pools()
        if not pools or unit.policy is None:
            return
        counts = ReplicaCounts(ready=sum(pool.count(ReplicaState.READY) for pool in pools),
                               starting=sum(pool.count(ReplicaState.STARTING) for pool in pools))
        unit.record(unit.policy.decide(wall, counts), wall, counts)

    def reconcile(self, unit: DeploymentUnit) -> None:
        if not self._is_live(unit):
            return
        warm = self.router.advance(unit, time.time())
        routing = unit.routing
        demand = {n: max(unit.demand.get(n, 0.0), pool.load.current + len(pool.waiters))
                  for n in routing.members() if n in unit.revisions
                  for pool in (unit.revisions[n].pool,)}
        desired = apportion(unit.decision.desired, routing.traffic, demand)
        if routing.shadow is not None and routing.shadow in unit.revisions:
            # The shadow gets a copy of every request: it needs the whole deployment's capacity.
            shadow = unit.revisions[routing.shadow].pool
            mirrored = max(unit.decision.desired, 1 if shadow.busy else 0)
            desired[routing.shadow] = max(desired.get(routing.shadow, 0), mirrored)
        needed = routing.needed()
        for live in list(unit.revisions.values()):
            if live.number in needed:
                self._scale(unit, live, max(desired.get(live.number, 0),
                                            warm.get(live.number, 0)))
            else:
                self._retire(unit, live)
        self._prioritise(unit)

    def _prioritise(self, unit: DeploymentUnit) -> None:
        """A shadow that serves no client traffic runs its replicas in the background."""
        routing = unit.routing
        shadow = routing.shadow if not routing.traffic.get(routing.shadow or 0) else None
        for live in unit.revisions.values():
            for replica_id in live.pool.replicas:
                entry = self.entries.get(replica_id)
                if entry is None or entry.handle is None:
                    continue
                background = live.number == shadow
                if entry.background != background:
                    self.backend.set_priority(entry.handle, background)
                    entry.background = background

    # -- scaling ---------------------------------------------------------------------
    def _scale(self, unit: DeploymentUnit, live: LiveRevision, desired: int) -> None:
        pool = live.pool
        ready = pool.count(ReplicaState.READY)
        starting = pool.count(ReplicaState.STARTING)
        if desired > ready + starting:
            if unit.evicted and not pool.busy:
                return  # evicted for room: what the policy remembers is no request
            unit.evicted = False
            failure = pool.failure
            if failure is not None:
                # Back off after init failures, and then probe with one replica at a time.
                if starting or time.monotonic() < failure.retry_at:
                    return
                if self.caps.allowed(unit, live, 1, self._all_units()) \
                        and self.budget.make_room(unit, live, self._all_units()):
                    self._start(unit, live)
                return
            wanted = desired - ready - starting  # within the namespace's quota, if it has one
            for _ in range(self.caps.allowed(unit, live, wanted, self._all_units())):
                if not self.budget.make_room(unit, live, self._all_units()):
                    break
                self._start(unit, live)
        elif desired < ready + starting:
            excess = ready + starting - desired
            if not pool.waiters:
                # A replica still starting has served nothing: cancel it, newest first,
                # rather than drain a warm one (held requests may still need it).
                newest = sorted((r for r in pool.replicas.values()
                                 if r.state is ReplicaState.STARTING),
                                key=lambda r: r.created_at, reverse=True)
                for replica in newest[:excess]:
                    self._cancel(live, replica)
                    excess -= 1
            idle_first = sorted(
                (r for r in pool.replicas.values() if r.state is ReplicaState.READY),
                key=lambda r: r.inflight,
            )
            for replica in idle_first[:excess]:
                pool.mark_draining(replica)

    def _retire(self, unit: DeploymentUnit, live: LiveRevision) -> None:
        for replica in list(live.pool.replicas.values()):
            if replica.state is ReplicaState.READY:
                live.pool.mark_draining(replica)
        if not live.pool.replicas:
            self._forget(unit, live)

    def _forget(self, unit: DeploymentUnit, live: LiveRevision) -> None:
        del unit.revisions[live.number]
        self.dispatcher.unregister(live.pool)
        self._release_code(live)
        release_copies(self.models.artifacts, live, self._all_units())

    def retire_all(self, unit: DeploymentUnit, error: StratusError) -> None:
        """The deployment is gone: fail its held requests, drain and stop every replica."""
        for live in unit.revisions.values():
            self.dispatcher.unregister(live.pool)
            live.pool.fail_waiters(error)
            for replica in list(live.pool.replicas.values()):
                if replica.state is ReplicaState.READY:
                    live.pool.mark_draining(replica)
        self.retired.append(unit)
        self._collect_retired()

    def _collect_retired(self) -> None:
        for unit in list(self.retired):
            for live in list(unit.revisions.values()):
                if not live.pool.replicas:
                    self._forget(unit, live)
            if not unit.revisions:
                self.retired.remove(unit)

    def _release_code(self, retired: LiveRevision) -> None:
        key = retired.code.code_key
        if any(live.code.code_key == key for u in self._all_units() for live in u.revisions.values()):
            return
        self._spawn(self.backend.release(key))

    # -- replica lifecycle ----------------------------------------------------------
    def _start(self, unit: DeploymentUnit, live: LiveRevision) -> None:
        settings = self.settings
        replica_id = f"{unit.name}-{live.number}-{secrets.token_hex(4)}"
        replica = live.pool.add_starting(replica_id)
        self.entries[replica_id] = _Entry(unit, live, replica)
        runtime = live.runtime
        config = ReplicaConfig(
            replica_id=replica_id, socket_path="", namespace=unit.namespace,
            deployment=unit.name, revision=live.number,
            max_concurrency=runtime.max_concurrency, timeout_s=runtime.timeout_s,
            memory_mb=runtime.memory_mb, threads=runtime.threads,
            log_path=str(settings.log_dir / unit.namespace / f"{unit.name}.log"),
            config=runtime.config, env=runtime.env, models=live.models,
        )
        self._spawn(self._launch(live, ReplicaSpec(replica_id, live.code, config)))

    async def _launch(self, live: LiveRevision, spec: ReplicaSpec) -> None:
        try:
            if live.runtime.models:
                # Laid out for every replica: a stat per file when nothing changed, while a
                # sealed blob damaged since the last start is caught before anything loads it.
                live.models = await asyncio.to_thread(self.models.lay_out, live.runtime.models)
                spec = dataclasses.replace(
                    spec, config=dataclasses.replace(spec.config, models=live.models))
            secrets = self.secrets
            if live.runtime.secrets and secrets is not None:
                # Read as each replica starts (a secret set again reaches new replicas) and
                # handed to the backend only, never stored or logged.
                values = await asyncio.to_thread(secrets.reveal, spec.config.namespace,
                                                 live.runtime.secrets)
                spec = dataclasses.replace(
                    spec, config=dataclasses.replace(spec.config, secrets=values))
            handle = await self.backend.start(spec)
        except StratusError as exc:
            self.replica_failed(spec.replica_id, exc.message, exc.detail)
            return
        except Exception as exc:
            log.exception("starting replica %s failed", spec.replica_id)
            self.replica_failed(spec.replica_id, f"{type(exc).__name__}: {exc}", None)
            return
        entry = self.entries.get(spec.replica_id)
        if entry is not None:
            entry.handle = handle
            if entry.cancelled:  # cancelled while the backend was still starting it
                await self.backend.stop(handle, False, "no longer needed")

    def _cancel(self, live: LiveRevision, replica: PoolReplica) -> None:
        live.pool.remove(replica.replica_id)
        entry = self.entries.get(replica.replica_id)
        if entry is None:
            return
        entry.cancelled = True
        if entry.handle is not None:
            self._spawn(self.backend.stop(entry.handle, False, "no longer needed"))

    def on_drained(self, replica: PoolReplica) -> None:
        entry = self.entries.get(replica.replica_id)
        if entry is not None and entry.handle is not None:
            self._spawn(self.backend.stop(entry.handle, True, "drained"))

    def _kill(self, replica: PoolReplica, reason: str) -> None:
        entry = self.entries.get(replica.replica_id)
        log.warning("killing replica %s: %s", replica.replica_id, reason)
        if entry is not None and entry.handle is not None:
            self._spawn(self.backend.stop(entry.handle, False, reason))

    def _check_health(self, unit: DeploymentUnit, live: LiveRevision, now: float) -> None:
        settings = self.settings
        timeout = live.runtime.timeout_s
        for replica in list(live.pool.replicas.values()):
            channel = replica.channel
            if replica.state is ReplicaState.STARTING:
                if now - replica.created_at > settings.init_timeout_s:
                    self._kill(replica, f"init did not finish within {settings.init_timeout_s:g}s")
                continue
            if channel is not None and now - channel.last_seen > settings.heartbeat_timeout_s:
                self._kill(replica, f"no heartbeat for {now - channel.last_seen:.0f}s")
                continue
            if replica.stuck_since and now - replica.stuck_since[0] > max(timeout, STUCK_GRACE_S):
                # A handler ran past its timeout and still holds a slot: replace the replica.
                if replica.state is ReplicaState.READY:
                    live.pool.mark_draining(replica)
                if replica.inflight <= len(replica.stuck_since):
                    self._kill(replica, f"handler still running {timeout:g}s after its timeout")

    # -- ReplicaEvents ----------------------------------------------------------------
    def replica_ready(self, replica_id: str, channel: ReplicaChannel, init_ms: float) -> None:
        entry = self.entries.get(replica_id)
        if entry is None or entry.replica.state is not ReplicaState.STARTING:
            channel.stop(0)
            return
        pool = entry.live.pool
        recovered = pool.failure is not None
        pool.mark_ready(entry.replica, channel, init_ms)
        channel.on_batch_sizes = entry.unit.batch_sizes.merge
        if recovered:
            record_recovery(self.writes, entry.unit, entry.live)
        log.info("replica %s ready (init %.1f ms)", replica_id, init_ms)
        unit = entry.unit
        started_s = time.monotonic() - entry.replica.created_at
        for observer in self.on_replica_started:
            observer(unit.namespace, unit.name, started_s)
        if not self._is_live(unit) or entry.live.number not in unit.routing.needed():
            pool.mark_draining(entry.replica)
            return
        self.schedule(unit)

    def replica_failed(self, replica_id: str, error: str, detail: str | None) -> None:
        entry = self.entries.pop(replica_id, None)
        if entry is None or entry.cancelled:  # a cancelled start is not a failure
            return
        entry.live.pool.remove(replica_id)
        record_failure(self.writes, self.settings.max_backoff_s, entry.unit, entry.live, error,
                       detail)
        if self._is_live(entry.unit):
            self.schedule(entry.unit)

    def replica_exited(self, namespace: str, deployment: str, replica_id: str, reason: str,
                       out_of_memory: bool) -> None:
        unit = self.units.get((namespace, deployment))
        if unit is not None:
            unit.exits.append({"replica": replica_id, "at": round(time.time(), 3),
                               "reason": reason, "out_of_memory": out_of_memory})

    def replica_lost(self, replica_id: str) -> None:
        entry = self.entries.pop(replica_id, None)
        if entry is None:
            return
        state = entry.replica.state
        entry.live.pool.remove(replica_id)
        if state is ReplicaState.READY:
            log.warning("replica %s of %s was lost while serving", replica_id, entry.unit.name)
        if self._is_live(entry.unit):
            self.schedule(entry.unit)
        else:
            self._collect_retired()
