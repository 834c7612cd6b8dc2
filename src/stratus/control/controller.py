"""The controller: applies specs, restores deployments at start-up, and keeps the deployments'
state. The reconciling itself (how many replicas, when to switch traffic, what to do when a
replica fails) is in ``reconciler``, routing in ``router``; making a revision live in ``loader``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from stratus.autoscale.build import validate_scaling
from stratus.backends.base import Backend, CodeSpec
from stratus.config import Settings
from stratus.control.loader import RevisionLoader
from stratus.control.quota import NamespaceCaps
from stratus.control.reconciler import Reconciler
from stratus.control.resolve import (
    deployment_name_for,
    options_from_meta,
    point_at_served_model,
    resolve_runtime,
    resolve_scaling,
)
from stratus.control.router import Router, traffic_view
from stratus.control.routing import Routing
from stratus.control.unit import DeploymentUnit
from stratus.control.writes import MetadataWrites
from stratus.dispatch.dispatcher import Dispatcher
from stratus.dispatch.pool import RevisionPool
from stratus.errors import BadRequest, DeployError, NotFound, StratusError, unknown_deployment
from stratus.models.service import ModelService
from stratus.sdk.options import DeploymentOptions
from stratus.security.quotas import quotas_from
from stratus.spec import (
    DeploymentPatch,
    DeploymentRequest,
    RolloutRequest,
    RolloutSteps,
    RolloutStrategy,
    RuntimeSpec,
    TrafficUpdate,
)
from stratus.store.blobs import NamespaceBlobs
from stratus.store.metadata import DeploymentRecord, MetadataStore
from stratus.store.secrets import SecretStore

log = logging.getLogger("stratus.controller")


class Controller:
    def __init__(
        self,
        settings: Settings,
        store: MetadataStore,
        blobs: NamespaceBlobs,
        backend: Backend,
        dispatcher: Dispatcher,
        models: ModelService,
        secrets: SecretStore | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.blobs = blobs
        self.models = models
        self.secrets = secrets
        self.backend = backend
        self.dispatcher = dispatcher
        self.units: dict[tuple[str, str], DeploymentUnit] = {}
        self.caps = NamespaceCaps(quotas_from(settings.section("quotas")))
        self.writes = MetadataWrites(store)
        self.router = Router(dispatcher, self.writes)
        self.reconciler = Reconciler(
            settings=settings, units=self.units, backend=backend, dispatcher=dispatcher,
            router=self.router, caps=self.caps, models=models, secrets=secrets, writes=self.writes,
        )
        self.loader = RevisionLoader(
            settings=settings, store=store, artifacts=blobs.artifacts, models=models, backend=backend,
            dispatcher=dispatcher, activate=self.activate, on_drained=self.reconciler.on_drained,
        )
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._dirty: set[tuple[str, str]] = set()
        self._flush_scheduled = False
        # Observers of each deleted deployment: (namespace, deployment). Those of each new
        # replica are the reconciler's.
        self.on_deleted: list[Callable[[str, str], None]] = []

    # -- lifecycle --------------------------------------------------------------
    async def start(self) -> None:
        await self.backend.open(self.reconciler)
        self._tasks.append(asyncio.create_task(self.writes.run()))
        records = await asyncio.to_thread(self.store.list_deployments)
        for record in records:
            try:
                await self._restore(record)
            except Exception:
                log.exception("could not restore deployment %s/%s", record.namespace, record.name)
        for handle in self.backend.unclaimed():  # handed over, of no revision restored
            await self.backend.stop(handle, True, "no longer needed after the takeover")
        self._tasks.append(asyncio.create_task(self._tick_loop()))

    async def close(self, hand_over: bool = False) -> None:
        """Stop; with ``hand_over`` (a takeover) the replicas run on for the next server."""
        with contextlib.suppress(Exception):  # what was queued is stored, unless it hangs
            await self.writes.drain()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.backend.close(hand_over)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.tick_s)
            now, wall = time.monotonic(), time.time()
            for unit in list(self.units.values()):
                try:
                    self.reconciler.tick(unit, now, wall)
                except Exception:
                    log.exception("reconciling %s/%s failed", unit.namespace, unit.name)

    # -- activator --------------------------------------------------------------
    def activate(self, pool: RevisionPool) -> None:
        """A request is waiting for a slot: reconcile its deployment at once (debounced)."""
        self._dirty.add((pool.namespace, pool.deployment))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, set()
        now, wall = time.monotonic(), time.time()
        for key in dirty:
            unit = self.units.get(key)
            if unit is None:
                continue
            self.reconciler.observe_now(unit, now, wall)
            self.reconciler.decide(unit, wall)
            self.reconciler.reconcile(unit)

    # -- restoring ---------------------------------------------------------------
    async def _restore(self, record: DeploymentRecord) -> None:
        unit = DeploymentUnit(record.namespace, record.name, record.scaling,
                              record.created_at, record.updated_at)
        unit.latest = record.latest_revision
        stable = record.serving_revision or record.latest_revision
        if record.routing:
            unit.routing = Routing.from_json(record.routing)
        else:  # recorded before traffic splits: all of it went to the serving revision
            unit.routing = Routing(traffic={stable: 100}, stable=stable)
        legacy = {unit.latest} if not record.routing else set()
        for number in sorted(unit.routing.needed() | legacy):
            await self.loader.bring_up(unit, number, restoring=True)
        self.units[unit.key] = unit
        unit.rebuild_policy()
        if not unit.routing.traffic or not set(unit.routing.traffic) <= set(unit.revisions):
            unit.routing.traffic = {stable: 100}
            unit.routing.stable = stable
        self.router.publish(unit, persist=False)
        if not record.routing and unit.latest != unit.stable and unit.latest in unit.revisions:
            # Recorded mid-switch before routing was kept: finish the switch.
            self.router.start_rollout(unit, unit.latest, RolloutSteps())
        self.reconciler.restored(unit)

    # -- API operations ---------------------------------------------------------
    def _lock(self, key: tuple[str, str]) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def apply(self, namespace: str, request: DeploymentRequest) -> dict[str, Any]:
        """Create or update a deployment. Returns once the code imports and validates."""
        if request.served_model and request.preload is None:
            # The built-in servers load transformers models: import both once, in the zygote.
            request = request.model_copy(update={"preload": ["torch", "transformers"]})
        source = request.code_ref()
        if source.bundle:  # 404 for a bundle of another namespace's, as for one never uploaded
            await asyncio.to_thread(self.blobs.require, namespace, source.bundle, "the code bundle")
        provisional = resolve_runtime(request, source, DeploymentOptions(), api=request.api)
        code = await self.loader.code_spec(provisional, namespace)
        meta = await self.backend.prepare(code)
        options = options_from_meta(meta)
        served = request.served_model
        name = request.name or options.name or (served and deployment_name_for(served))
        if not name:
            raise DeployError("no deployment name: pass --name or declare @deployment(name=...)")
        runtime = resolve_runtime(request, source, options, api=request.api)
        refs = [served, *(request.models or [])] if served else request.models or []
        runtime.models = await self._resolve(namespace, refs)
        point_at_served_model(runtime)
        await self._check_secrets(namespace, runtime)
        scaling = resolve_scaling(request, options)
        validate_scaling(scaling)
        # Declarative, as the rest of the body: no rollout field means the default one.
        return await self._record(namespace, name, runtime, scaling, meta, code,
                                  await self.loader.lay_out(runtime),
                                  request.rollout or RolloutStrategy(), declare=True)

    async def _resolve(self, namespace: str, refs: list[str]) -> list[dict[str, Any]]:
        try:
            return await asyncio.to_thread(self.models.resolve, namespace, refs)
        except NotFound as exc:  # the deploy names a model that is not there: its mistake
            raise DeployError(exc.message) from None

    async def _check_secrets(self, namespace: str, runtime: RuntimeSpec) -> None:
        """Every secret a revision names must exist now; its value is read only when a
        replica starts."""
        clash = sorted(set(runtime.env) & set(runtime.secrets))
        if clash:
            raise BadRequest(f"{', '.join(clash)} set both in env and from secrets")
        if not runtime.secrets:
            return
        if self.secrets is None:
            raise DeployError("this server keeps no secrets")
        missing = await asyncio.to_thread(self.secrets.missing, namespace,
                                          set(runtime.secrets.values()))
        if missing:
            raise DeployError(f"secret(s) {', '.join(repr(name) for name in missing)} not set in "
                              f"namespace {namespace!r}; set them with `stratus secrets set NAME`")

    def secrets_in_use(self, namespace: str, name: str) -> list[str]:
        """Live revisions that read secret ``name``, as 'deployment (revision N)'."""
        return [f"{unit.name} (revision {live.number})" for unit in self.list_units(namespace)
                for live in unit.revisions.values() if name in live.runtime.secrets.values()]

    async def patch(self, namespace: str, name: str, patch: DeploymentPatch,
                    strategy: RolloutStrategy | None = None) -> dict[str, Any]:
        """A new revision with the patched fields, rolled out by ``strategy`` over the
        deployment's declared one."""
        unit = self.get_unit(namespace, name)
        latest = unit.latest_revision()
        if latest is None:
            raise NotFound(f"deployment {name!r} has no revision")
        fields = set(RuntimeSpec.model_fields) - {"models"}
        runtime = RuntimeSpec.model_validate(
            {**latest.runtime.model_dump(), **patch.model_dump(exclude_none=True, include=fields)}
        )
        if patch.models is not None:
            # A built-in server keeps serving its model whatever the patch says.
            served = latest.runtime.models[:1] if runtime.api != "native" else []
            refs = [m["ref"] for m in served] + patch.models
            runtime.models = await self._resolve(namespace, refs)
        self.settings.check_preload(runtime.preload)  # a restart would import it
        point_at_served_model(runtime)
        await self._check_secrets(namespace, runtime)
        scaling = resolve_scaling(patch, DeploymentOptions(), unit.scaling)
        validate_scaling(scaling)
        return await self._record(namespace, name, runtime, scaling, latest.pool.meta, latest.code,
                                  await self.loader.lay_out(runtime), strategy)

    async def follow_model(self, namespace: str, name: str) -> list[str]:
        """A version of ``name`` changed stage: deployments that follow that stage get a new
        revision with the newly resolved version, rolled out as any other. Returns them."""
        followed = []
        for unit in self.list_units(namespace):
            latest = unit.latest_revision()
            if latest is None or not any(m["name"] == name and m.get("stage")
                                         for m in latest.runtime.models):
                continue
            try:
                refs = [model["ref"] for model in latest.runtime.models]
                resolved = await asyncio.to_thread(self.models.resolve, namespace, refs)
                if resolved == latest.runtime.models:
                    continue
                runtime = latest.runtime.model_copy(update={"models": resolved})
                await self._record(namespace, unit.name, runtime, unit.scaling, latest.pool.meta,
                                   latest.code, await self.loader.lay_out(runtime))
                followed.append(unit.name)
            except StratusError as exc:
                log.error("deployment %s cannot follow model %s: %s", unit.name, name, exc.message)
        return followed

    def models_in_use(self, namespace: str, name: str, version: str | None) -> list[str]:
        """Live revisions that load ``name`` (at ``version``, if given), as 'deployment (rev N)'."""
        users = []
        for unit in self.list_units(namespace):
            for live in unit.revisions.values():
                if any(m["name"] == name and (version is None or m["version"] == version)
                       for m in live.runtime.models):
                    users.append(f"{unit.name} (revision {live.number})")
        return users

    async def _record(self, namespace: str, name: str, runtime: RuntimeSpec, scaling: Any,
                      meta: dict[str, Any], code: CodeSpec, models: list[dict[str, Any]],
                      strategy: RolloutStrategy | None = None,
                      declare: bool = False) -> dict[str, Any]:
        """``declare``: ``strategy`` becomes the deployment's (a POST); otherwise it only
        overrides the deployment's for this revision's rollout."""
        key = (namespace, name)
        async with self._lock(key):
            admit = self.caps.admission(namespace, name, scaling, runtime)  # 403 in the write
            deployment, revision, created = await self.writes.call(
                key, lambda: self.store.apply(namespace, name, runtime, scaling, meta, admit))
            unit = self.units.get(key)
            if unit is None:
                unit = DeploymentUnit(namespace, name, scaling, deployment.created_at,
                                      deployment.updated_at)
                self.units[key] = unit
            unit.scaling = scaling
            unit.updated_at = deployment.updated_at
            if revision.number not in unit.revisions:
                self.loader.make_live(unit, revision, code, models)
            unit.latest = revision.number
            unit.rebuild_policy()
            if created:
                log.info("deployment %s/%s: revision %d recorded", namespace, name, revision.number)
            routing = unit.routing
            strategy = strategy or RolloutStrategy()
            if declare:
                self.router.declare(unit, strategy)
            if routing.stable is None:
                routing.traffic, routing.stable = {revision.number: 100}, revision.number
                self.router.publish(unit)
            elif strategy.promote and revision.number != routing.stable and not (
                    routing.rollout is not None and routing.rollout.active
                    and routing.rollout.target == revision.number):
                self.router.start_rollout(unit, revision.number, strategy)
            self.reconciler.reconcile(unit)
            await self.writes.flush(key)  # the routing too is stored before the answer
            return unit.view()

    # -- traffic ----------------------------------------------------------------
    async def set_traffic(self, namespace: str, name: str, update: TrafficUpdate) -> dict[str, Any]:
        unit = self.get_unit(namespace, name)
        async with self._lock(unit.key):
            wanted = set(update.traffic or {})
            if update.shadow is not None:
                wanted.add(update.shadow)
            for number in sorted(wanted):
                await self.loader.bring_up(unit, number, restoring=False)
            self.router.set_traffic(unit, update)
            self.reconciler.reconcile(unit)
            await self.writes.flush(unit.key)  # stored before it is answered
            return traffic_view(unit)

    async def rollout(self, namespace: str, name: str, request: RolloutRequest) -> dict[str, Any]:
        unit = self.get_unit(namespace, name)
        async with self._lock(unit.key):
            await self.loader.bring_up(unit, request.to, restoring=False)
            self.router.start_rollout(unit, request.to, request)
            self.reconciler.reconcile(unit)
            await self.writes.flush(unit.key)
            return traffic_view(unit)

    async def rollback(self, namespace: str, name: str) -> dict[str, Any]:
        unit = self.get_unit(namespace, name)
        async with self._lock(unit.key):
            previous = unit.routing.previous
            rollout = unit.routing.rollout
            if previous is not None and not (rollout is not None and rollout.active):
                await self.loader.bring_up(unit, previous, restoring=False)
            self.router.rollback(unit)
            self.reconciler.reconcile(unit)
            await self.writes.flush(unit.key)
            return traffic_view(unit)

    async def delete(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        async with self._lock(key):
            # Stored first: one the store refused (507) leaves the deployment served and managed.
            deleted = await self.writes.call(
                key, lambda: self.store.delete_deployment(namespace, name))
            unit = self.units.pop(key, None)
            self.dispatcher.remove_route(namespace, name)
            if unit is None and not deleted:
                raise self._unknown(namespace, name)
            if unit is not None:
                self.reconciler.retire_all(unit, NotFound(f"deployment {name!r} was deleted"))
            for observer in self.on_deleted:
                observer(namespace, name)

    def get_unit(self, namespace: str, name: str) -> DeploymentUnit:
        unit = self.units.get((namespace, name))
        if unit is None:
            raise self._unknown(namespace, name)
        return unit

    def _unknown(self, namespace: str, name: str) -> NotFound:
        return unknown_deployment(name, (u.name for u in self.units.values()
                                         if u.namespace == namespace))

    def list_units(self, namespace: str) -> list[DeploymentUnit]:
        return sorted((u for u in self.units.values() if u.namespace == namespace),
                      key=lambda u: u.name)
