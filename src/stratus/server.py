"""The server: parses the configuration, then wires stores, backend, dispatcher, controller
and observers together behind the gateway, and starts and stops them with the app."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

import stratus
from stratus.backends.handover import BackendHandover
from stratus.backends.isolation import Isolation
from stratus.backends.local import LocalBackend
from stratus.backends.orphans import claim
from stratus.config import Settings
from stratus.control.controller import Controller
from stratus.cost import prices_from
from stratus.datasets.service import DatasetService
from stratus.dispatch.dispatcher import Dispatcher
from stratus.experiments.book import ExperimentBook
from stratus.gateway.app import build
from stratus.gateway.dataplane import DataPlane
from stratus.gateway.edge import Authenticator
from stratus.gateway.guard import Guard
from stratus.gateway.state import Components
from stratus.gateway.takeover import Takeover
from stratus.grpc_api.server import GrpcServer
from stratus.invocations.destinations import Destinations
from stratus.invocations.service import AsyncService
from stratus.jobs.log import JobLog
from stratus.jobs.promotion import Promotion
from stratus.jobs.request import jobs_config
from stratus.jobs.service import JobService
from stratus.models.registry import EXCLUSIVE_STAGES
from stratus.models.service import ModelService
from stratus.observe.alerts import AlertManager, alerts_config
from stratus.observe.logs import AccessLog, log_config
from stratus.observe.metrics import registry_for
from stratus.observe.payloads import PayloadLog
from stratus.observe.request_metrics import RequestMetrics
from stratus.observe.series import SeriesBook
from stratus.observe.usage import controller_meter
from stratus.observe.usage_retention import UsageRetention
from stratus.observe.usage_writer import ProcessWriter
from stratus.queue.factory import open_queue
from stratus.resilience.disk import DiskHealth
from stratus.security.audit_log import AuditLog
from stratus.security.checkpoint_file import CheckpointFile
from stratus.security.checkpointer import Checkpointer
from stratus.security.checkpoints import FILE_NAME, checkpoint_policy
from stratus.security.keys import KeyRing, KeyService
from stratus.security.masterkey import load_keyring
from stratus.security.quotas import quotas_from
from stratus.security.rotation import settle
from stratus.security.sessions import SessionSigner, session_ttl
from stratus.security.tokens import JwtVerifier, jwt_config
from stratus.store.artifacts import ArtifactStore, sealed_blobs_exist
from stratus.store.audit import AuditStore
from stratus.store.blobs import NamespaceBlobs
from stratus.store.datasets import DatasetStore
from stratus.store.db import make_engine, migrate, sqlite_url
from stratus.store.experiments import ExperimentStore
from stratus.store.job_usage import JobUsageStore
from stratus.store.keys import KeyStore
from stratus.store.legacy import seal_legacy
from stratus.store.metadata import MetadataStore
from stratus.store.models import ModelStore
from stratus.store.owners import BlobOwners
from stratus.store.plaincache import PlainCache, artifacts_config, cache_root
from stratus.store.secrets import SecretStore
from stratus.store.usage import UsageStore
from stratus.telemetry import tracing
from stratus.tracking.mlflow import MlflowMirror, mirror_uri
from stratus.triggers.service import Triggers
from stratus.workflows.runner import WorkflowRunner

log = logging.getLogger("stratus.server")


def create_app(settings: Settings, takeover: Takeover | None = None) -> DataPlane:
    """The server as one ASGI app: the gateway, and behind it every component, started and
    stopped by the app's lifespan. ``takeover``: what the version before this one's exec
    handed on (``gateway/takeover.py``), adopted instead of started."""
    if not settings.usage_retention_s >= 0:
        raise ValueError("usage_retention_s (STRATUS_USAGE_RETENTION_S) is seconds, 0 or more "
                         f"(0: usage records are kept for good), not {settings.usage_retention_s}")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # First: a second server on this data dir would reap the running one's replicas.
    held = claim(settings.data_dir, takeover.lock_fd if takeover else None)
    handed = BackendHandover.from_json(takeover.backend) if takeover and takeover.backend \
        else None
    jwt = jwt_config(settings.section("auth"))  # invalid: fail now
    authenticator = Authenticator(settings.admin_key, KeyRing(), JwtVerifier(jwt) if jwt else None)
    alerting = AlertManager(alerts_config(settings.section("alerts")))  # invalid: fail now
    prices = prices_from(settings.section("prices"))
    audit_log = AuditLog()  # started once the database is there; appends wait until then
    checkpoints = checkpoint_policy(settings.section("audit"))  # invalid: fail now
    tracing.parse_config(settings.section("tracing"))  # invalid: fail now
    guard = Guard(quotas_from(settings.section("quotas")), authenticator.keys,  # invalid: fail now
                  max_body_bytes=settings.max_body_bytes, max_json_depth=settings.max_json_depth)
    payloads = PayloadLog() if log_config(settings.section("logging")).payloads else None
    # The master key: generated (and its place logged) on first start; missing: fail now.
    keyring = load_keyring(settings.data_dir,
                           encrypted_data=sealed_blobs_exist(settings.artifacts_dir))
    authenticator.sessions = SessionSigner(keyring, settings.admin_key,  # invalid: fail now
                                           session_ttl(settings.section("auth")))
    where = artifacts_config(settings.section("artifacts")).plaintext  # invalid: fail now
    plain = PlainCache(cache_root(settings.data_dir, where), where)
    isolation = Isolation.for_settings(settings)  # invalid, or replicas could not run: fail now
    jobs_settings = jobs_config(settings.section("jobs"))  # invalid: fail now
    mlflow_uri = mirror_uri(settings.section("tracking"))  # invalid: fail now

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        disk = DiskHealth()  # what each writer last met: /readyz tells of a full disk
        engine = make_engine(settings.database_url or sqlite_url(settings.data_dir), disk)
        await asyncio.to_thread(migrate, engine)
        artifacts = ArtifactStore(settings.artifacts_dir, keyring, plain)
        artifacts.disk = audit_log.disk = disk
        mirror = MlflowMirror(mlflow_uri, locate=artifacts.plain_blob) if mlflow_uri else None
        app.state.keyring, app.state.secrets = keyring, SecretStore(engine, keyring)
        checkpoint_file = CheckpointFile(settings.data_dir / FILE_NAME, keyring)
        app.state.wrapped_keys = {"artifacts": artifacts, "secrets": app.state.secrets,
                                  "audit_checkpoints": checkpoint_file}
        await asyncio.to_thread(seal_legacy, artifacts)  # from before encryption at rest
        await asyncio.to_thread(settle, keyring, app.state.wrapped_keys)  # wrong key: stop
        # After the key is settled: a checkpoint MAC'd under a wrong key would stay unverifiable.
        app.state.audit = audit_log
        app.state.audit_store = audit_store = AuditStore(engine)
        audit_log.start(audit_store, Checkpointer(checkpoint_file, checkpoints))
        plain.open(keep=handed is not None)
        app.state.keys = keys = KeyService(KeyStore(engine), authenticator.keys)
        await keys.start()
        dispatcher = Dispatcher()
        backend = LocalBackend(settings.run_dir, settings.log_dir, isolation, handed)
        blobs = NamespaceBlobs(artifacts, BlobOwners(engine))
        model_service = ModelService(ModelStore(engine, exclusive_stages=EXCLUSIVE_STAGES), blobs)
        controller = Controller(settings, MetadataStore(engine), blobs, backend, dispatcher,
                                model_service, app.state.secrets)
        parts = Components(settings, controller, dispatcher, artifacts, registry_for(controller),
                           model_service, DatasetService(DatasetStore(engine), blobs), blobs)
        request_metrics = RequestMetrics(parts.metrics)
        guard.count_into(parts.metrics)
        dispatcher.listeners.append(request_metrics.observe)
        controller.reconciler.on_replica_started.append(request_metrics.replica_started)
        controller.on_deleted.append(request_metrics.forget)
        app.state.components = parts
        parts.payloads = payloads
        app.state.tracing = tracer = tracing.install(settings.section("tracing"))
        access_log = AccessLog()
        access_log.start()
        dispatcher.listeners += [access_log, alerting.observe]
        controller.router.on_alert = alerting.one_shot
        app.state.alerts = alerting
        await alerting.start()
        usage_writer = ProcessWriter(engine.url.render_as_string(hide_password=False))
        usage_writer.disk = parts.disk = disk
        parts.usage = meter = controller_meter(UsageStore(engine), controller, prices, usage_writer)
        await meter.start()
        dispatcher.listeners.append(meter.observe)
        meter.on_records.append(request_metrics.metered)
        retention = UsageRetention(usage_writer.prune, settings.usage_retention_s)
        retention.start()
        book = ExperimentBook(ExperimentStore(engine), controller)
        app.state.experiments = book
        await book.start()
        dispatcher.listeners.append(book.observe)
        series = app.state.series = SeriesBook(controller.units)
        dispatcher.listeners.append(series.observe)
        controller.reconciler.on_replica_started.append(series.replica_started)
        series.start()
        await controller.start()
        # After the controller: the queue drains into the routes it restored.
        parts.async_service = async_service = AsyncService(
            open_queue(settings.queue_url, engine), dispatcher, controller,
            Destinations(app.state.secrets))
        await async_service.start()
        parts.jobs = jobs = JobService(settings, JobLog(engine), backend, blobs, jobs_settings,
                                       usage=JobUsageStore(engine), datasets=parts.datasets,
                                       models=parts.models)
        parts.promotion = Promotion(jobs, parts.models, controller, blobs,
                                    settings.max_blob_bytes)
        if mirror is not None:
            jobs.writer.listeners.append(lambda namespace, event: mirror.apply(event, namespace))
        app.state.triggers = triggers = Triggers(engine, async_service, controller.get_unit,
                                                 jobs=jobs)
        async_service.destinations.publish = triggers.topics.publish  # "topic" destinations
        app.state.workflows = workflows = WorkflowRunner(engine, dispatcher, controller)
        await workflows.start()  # resumes the executions a stopped server left running
        await jobs.start()  # fails the jobs a stopped server left unfinished
        await triggers.start()  # after: a tick's job is not taken for one left unfinished
        # What start-up loaded (FastAPI, SQLAlchemy, numpy, scipy: some 150,000 objects) lives
        # as long as the server. Frozen, it is no longer walked by every full collection,
        # which otherwise stalls the loop for 60-80 ms, the p99 of busy requests.
        gc.collect()
        gc.freeze()
        app.state.data_plane.components = parts
        grpc_server = GrpcServer(parts, authenticator, guard, audit_log) \
            if settings.grpc_port else None
        if grpc_server is not None:
            await grpc_server.start()
        parts.ready = True
        shown = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
        base = f"http://{shown}:{settings.port}"
        log.info("stratus %s serving on %s (data in %s)", stratus.__version__, base,
                 settings.data_dir)
        log.info("dashboard: %s/ui/  API docs: %s/docs and %s/redoc (sign in on the dashboard "
                 "with an API key)", base, base, base)
        try:
            yield {}
        finally:
            parts.ready = False
            handing = app.state.data_plane.takeover  # a takeover: replicas run on
            stopping = StopClock()  # a step that holds the stop up is named in the log
            if grpc_server is not None:
                await stopping.step("grpc", grpc_server.close())  # its calls in flight end first
            app.state.data_plane.components = None
            await stopping.step("triggers", triggers.close())  # first: nothing new is submitted
            await stopping.step("async", async_service.close())  # in flight: run again later
            await stopping.step("workflows", workflows.close())  # their steps stop, not fail
            await stopping.step("jobs", jobs.close())  # before the backend: workers killed
            if mirror is not None:
                await stopping.step("mirror", asyncio.to_thread(mirror.close))
            await stopping.step("controller", controller.close(hand_over=handing is not None))
            if handing is None:
                plain.close()  # the decrypted artifacts, once no replica uses them
            elif backend.handed is not None:
                handing.backend = backend.handed.to_json()
            await stopping.step("experiments", book.close())  # the last drained requests count
            await stopping.step("usage retention", retention.close())  # its step under way
            await stopping.step("meter", meter.close())
            await stopping.step("usage", usage_writer.close())
            await stopping.step("alerts", alerting.close())
            await stopping.step("access log", access_log.close())
            await stopping.step("series", series.close())
            await stopping.step("keys", keys.close())
            await stopping.step("audit", audit_log.close())  # last: what the final requests left
            engine.dispose()
            await stopping.step("tracing", asyncio.to_thread(tracer.shutdown))  # OTLP spans
            if handing is None:
                os.close(held)
            else:  # held across the exec: no other server can claim the data dir meanwhile
                os.set_inheritable(held, True)
                handing.lock_fd = held

    return build(lifespan, authenticator, guard, audit_log)


class StopClock:
    """The steps of a stop, each named and bounded. One still running after ``SLOW_STOP_S``
    is logged by name then; one that has not ended after ``STEP_LIMIT_S`` is cancelled, with
    an error naming it, and the stop goes on: a server that never exits holds its port and
    its data dir until something kills it, which loses more than the step's own end (a
    drain test waited 30 s for an exit in CI, with nothing saying where)."""

    SLOW_STOP_S = 2.0
    STEP_LIMIT_S = 15.0

    async def step(self, name: str, closing: Awaitable[object]) -> None:
        started = time.monotonic()
        slow = asyncio.get_running_loop().call_later(
            self.SLOW_STOP_S, log.warning, "stopping: still waiting for %s", name)
        try:
            await asyncio.wait_for(closing, self.STEP_LIMIT_S)
        except TimeoutError:
            log.error("stopping: %s did not end within %.0f s; cancelled, stopping the rest",
                      name, self.STEP_LIMIT_S)
            return
        finally:
            slow.cancel()
        took = time.monotonic() - started
        if took > self.SLOW_STOP_S:
            log.warning("stopping: %s took %.1f s", name, took)
