"""Making revisions live: code prepared in a zygote, models laid out, a pool in the dispatcher."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from stratus.backends.base import Backend, CodeSpec
from stratus.config import Settings
from stratus.control.unit import DeploymentUnit, LiveRevision, pool_limits
from stratus.dispatch.dispatcher import Dispatcher
from stratus.dispatch.pool import FailureState, PoolReplica, RevisionPool
from stratus.errors import BadRequest, DeployError, StratusError
from stratus.models.service import ModelService
from stratus.spec import RuntimeSpec
from stratus.store.artifacts import ArtifactStore
from stratus.store.metadata import MetadataStore, RevisionRecord

log = logging.getLogger("stratus.controller")


class RevisionLoader:
    """Each new pool calls ``activate`` when a request waits for a slot, and ``on_drained``
    when a draining replica has finished its last request."""

    def __init__(self, *, settings: Settings, store: MetadataStore, artifacts: ArtifactStore,
                 models: ModelService, backend: Backend, dispatcher: Dispatcher,
                 activate: Callable[[RevisionPool], None],
                 on_drained: Callable[[PoolReplica], None]) -> None:
        self.settings = settings
        self.store = store
        self.artifacts = artifacts
        self.models = models
        self.backend = backend
        self.dispatcher = dispatcher
        self.activate = activate
        self.on_drained = on_drained

    async def code_spec(self, runtime: RuntimeSpec, namespace: str) -> CodeSpec:
        # Before any zygote: a deploy, and a restored revision the operator has since
        # disallowed, never imports a preload outside the operator's list.
        self.settings.check_preload(runtime.preload)
        if runtime.bundle:
            bundle_dir = await asyncio.to_thread(self.artifacts.unpack_bundle, runtime.bundle)
        else:  # a built-in server: its code is the installed package; it runs in an empty dir
            bundle_dir = self.settings.data_dir / "builtin"
            bundle_dir.mkdir(parents=True, exist_ok=True)
        return CodeSpec(
            code_key=_zygote_key(runtime, namespace), bundle_dir=str(bundle_dir),
            entrypoint=runtime.entrypoint, preload=tuple(runtime.preload), env=dict(runtime.env),
            namespace=namespace,
        )

    async def lay_out(self, runtime: RuntimeSpec) -> list[dict[str, Any]]:
        try:
            return await asyncio.to_thread(self.models.lay_out, runtime.models)
        except StratusError as exc:  # a corrupted or missing blob: the deploy cannot proceed
            raise DeployError(exc.message) from None

    def make_live(
        self, unit: DeploymentUnit, record: RevisionRecord, code: CodeSpec,
        models: list[dict[str, Any]] | None = None,
    ) -> LiveRevision:
        pool = RevisionPool(unit.namespace, unit.name, record.number,
                            pool_limits(record.runtime, unit.scaling), self.activate)
        pool.meta = record.code_meta
        pool.api = record.runtime.api
        pool.on_drained = self.on_drained
        live = LiveRevision(record.number, record.runtime, code, pool, record.created_at,
                            models or [])
        unit.revisions[record.number] = live
        # Its outlier ejection and adaptive limit: a revision brought back by a rollback or a
        # traffic change has them as a newly deployed one does.
        unit.rebuild_policy()
        self.dispatcher.register(pool)
        return live

    async def bring_up(self, unit: DeploymentUnit, number: int, restoring: bool) -> None:
        """Make a recorded revision live: its code prepared in a zygote and its models laid
        out. While restoring, a revision that cannot load stays live and answers 503."""
        if number in unit.revisions:
            return
        revision = await asyncio.to_thread(
            self.store.get_revision, unit.namespace, unit.name, number
        )
        if revision is None:
            if restoring:
                return
            raise BadRequest(f"deployment {unit.name!r} has no revision {number}")
        runtime = revision.runtime
        try:
            code = await self.code_spec(runtime, unit.namespace)
        except StratusError as exc:  # the bundle is gone: only a redeploy can help
            if not restoring:
                raise DeployError(f"revision {number} cannot be restored: {exc.message}") from None
            live = self.make_live(unit, revision,
                                  CodeSpec(_zygote_key(runtime, unit.namespace), "",
                                           runtime.entrypoint, namespace=unit.namespace))
            _restore_failed(live, unit.name, exc, retry_s=self.settings.max_backoff_s)
            return
        if not restoring:
            models = await self.lay_out(runtime)
            await self.backend.prepare(code)
            self.make_live(unit, revision, code, models)
            return
        live = self.make_live(unit, revision, code)
        try:
            # Models not laid out here are laid out again before a replica starts.
            live.models = await asyncio.to_thread(self.models.lay_out, runtime.models)
            await self.backend.prepare(code)
        except StratusError as exc:  # keep serving the rest; this one answers 503
            _restore_failed(live, unit.name, exc, retry_s=60.0)


def _restore_failed(live: LiveRevision, name: str, exc: StratusError, retry_s: float) -> None:
    """No replica is tried before ``retry_s``: the reconciler's backoff takes it from there."""
    live.pool.failure = FailureState(exc.message, exc.detail, 1, time.monotonic() + retry_s)
    log.error("revision %s of %s cannot load: %s", live.number, name, exc.message)


def _zygote_key(runtime: RuntimeSpec, namespace: str) -> str:
    """Revision zygotes are per namespace: each imports the code as its namespace's user."""
    return f"{namespace}/{runtime.code_key()}"
