"""Builds the ASGI application: wires stores, backend, dispatcher and controller, and mounts
the protocol adapters behind the edge middleware.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException

import stratus
from stratus.backends.isolation import Isolation
from stratus.backends.local import LocalBackend
from stratus.config import Settings
from stratus.control.controller import Controller
from stratus.control.experiments import ExperimentBook
from stratus.dispatch.dispatcher import Dispatcher
from stratus.errors import BadRequest, InvalidJSON, StratusError
from stratus.gateway import alerts, blobs, dashboard, deployments, experiments, models, openai_models, v2
from stratus.gateway.audit import AuditMiddleware
from stratus.gateway.audit_routes import router as audit_router
from stratus.gateway.authz import needs
from stratus.gateway.dataplane import DataPlane, openapi_paths
from stratus.gateway.edge import Authenticator
from stratus.gateway.guard import Guard
from stratus.gateway.http import error_reply
from stratus.gateway.keys import router as keys_router
from stratus.gateway.masterkey import router as master_key_router
from stratus.gateway.middleware import EdgeMiddleware
from stratus.gateway.openapi_errors import document_errors
from stratus.gateway.secrets import router as secrets_router
from stratus.gateway.state import Components
from stratus.gateway.traces import router as traces_router
from stratus.gateway.usage import router as usage_router
from stratus.models.service import ModelService
from stratus.observe import tracing
from stratus.observe.alerts import AlertManager, alerts_config
from stratus.observe.cost import prices_from
from stratus.observe.logs import AccessLog, log_config
from stratus.observe.metrics import registry_for
from stratus.observe.payloads import PayloadLog
from stratus.observe.request_metrics import RequestMetrics
from stratus.observe.series import SeriesBook
from stratus.observe.usage import controller_meter
from stratus.observe.usage_writer import ProcessWriter
from stratus.security.audit_log import AuditLog
from stratus.security.keys import KeyRing, KeyService
from stratus.security.masterkey import load_keyring
from stratus.security.quotas import quotas_from
from stratus.security.roles import Permission
from stratus.security.rotation import settle
from stratus.security.tokens import JwtVerifier, jwt_config
from stratus.store.artifacts import ArtifactStore, sealed_blobs_exist
from stratus.store.audit import AuditStore
from stratus.store.db import make_engine, migrate, sqlite_url
from stratus.store.experiments import ExperimentStore
from stratus.store.keys import KeyStore
from stratus.store.legacy import seal_legacy
from stratus.store.metadata import MetadataStore
from stratus.store.models import ModelStore
from stratus.store.plaincache import PlainCache, cache_root
from stratus.store.secrets import SecretStore
from stratus.store.usage import UsageStore

log = logging.getLogger("stratus.server")

_HTTP_ERROR_TYPES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def _respond(request: Request, error: StratusError) -> Response:
    state = request.scope.get("state", {})
    reply = error_reply(error, str(state.get("request_id", "")), state.get("principal"),
                        dict(request.headers), request.url.path)
    return Response(reply.body, status_code=reply.status, media_type="application/json",
                    headers={k.decode(): v.decode() for k, v in reply.headers})


def _install_error_handlers(app: FastAPI) -> None:
    async def stratus_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StratusError)
        return _respond(request, exc)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error.get('loc', ()))}: {error.get('msg')}"
            for error in errors
        )
        cls = InvalidJSON if any(e.get("type") == "json_invalid" for e in errors) else BadRequest
        return _respond(request, cls(problems or "invalid request"))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        error = StratusError(str(exc.detail))
        error.status = exc.status_code
        error.type = _HTTP_ERROR_TYPES.get(exc.status_code, "http_error")
        return _respond(request, error)

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _respond(request, StratusError("internal server error"))

    app.add_exception_handler(StratusError, stratus_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)


def _with_data_plane_schema(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            schema["paths"].update(openapi_paths())
            document_errors(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings) -> DataPlane:
    """The ASGI app: the data plane in front of the control-plane FastAPI app."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    jwt = jwt_config(settings.section("auth"))  # invalid: fail now
    authenticator = Authenticator(settings.admin_key, KeyRing(), JwtVerifier(jwt) if jwt else None)
    alerting = AlertManager(alerts_config(settings.section("alerts")))  # invalid: fail now
    prices = prices_from(settings.section("prices"))
    audit_log = AuditLog()  # started once the database is there; appends wait until then
    tracing.parse_config(settings.section("tracing"))  # invalid: fail now
    guard = Guard(quotas_from(settings.section("quotas")), authenticator.keys,  # invalid: fail now
                  max_body_bytes=settings.max_body_bytes, max_json_depth=settings.max_json_depth)
    payloads = PayloadLog() if log_config(settings.section("logging")).payloads else None
    # The master key: generated (and its place logged) on first start; missing: fail now.
    keyring = load_keyring(settings.data_dir,
                           encrypted_data=sealed_blobs_exist(settings.artifacts_dir))
    plain = PlainCache(cache_root(settings.data_dir))
    isolation = Isolation.for_settings(settings)  # invalid, or replicas could not run: fail now

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        engine = make_engine(settings.database_url or sqlite_url(settings.data_dir))
        await asyncio.to_thread(migrate, engine)
        app.state.audit = audit_log
        audit_log.start(AuditStore(engine))
        artifacts = ArtifactStore(settings.artifacts_dir, keyring, plain)
        app.state.keyring, app.state.secrets = keyring, SecretStore(engine, keyring)
        app.state.wrapped_keys = {"artifacts": artifacts, "secrets": app.state.secrets}
        await asyncio.to_thread(seal_legacy, artifacts)  # from before encryption at rest
        await asyncio.to_thread(settle, keyring, app.state.wrapped_keys)  # wrong key: stop
        plain.open()
        app.state.keys = keys = KeyService(KeyStore(engine), authenticator.keys)
        await keys.start()
        dispatcher = Dispatcher()
        backend = LocalBackend(settings.run_dir, settings.log_dir, isolation)
        model_service = ModelService(ModelStore(engine), artifacts)
        controller = Controller(settings, MetadataStore(engine), artifacts, backend, dispatcher,
                                model_service, app.state.secrets)
        parts = Components(settings, controller, dispatcher, artifacts, registry_for(controller),
                           model_service)
        request_metrics = RequestMetrics(parts.metrics)
        guard.count_into(parts.metrics)
        dispatcher.listeners.append(request_metrics.observe)
        controller.on_replica_started.append(request_metrics.replica_started)
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
        parts.usage = meter = controller_meter(UsageStore(engine), controller, prices, usage_writer)
        await meter.start()
        dispatcher.listeners.append(meter.observe)
        meter.on_records.append(request_metrics.metered)
        book = ExperimentBook(ExperimentStore(engine), controller)
        app.state.experiments = book
        await book.start()
        dispatcher.listeners.append(book.observe)
        series = app.state.series = SeriesBook(controller.units)
        dispatcher.listeners.append(series.observe)
        series.start()
        await controller.start()
        # What start-up loaded (FastAPI, SQLAlchemy, numpy, scipy: some 150,000 objects) lives
        # as long as the server. Frozen, it is no longer walked by every full collection,
        # which otherwise stalls the loop for 60-80 ms, the p99 of busy requests.
        gc.collect()
        gc.freeze()
        data_plane.components = parts
        parts.ready = True
        log.info("stratus %s serving on http://%s:%d (data in %s)", stratus.__version__,
                 settings.host, settings.port, settings.data_dir)
        try:
            yield {}
        finally:
            parts.ready = False
            data_plane.components = None
            await controller.close()
            plain.close()  # the decrypted artifacts, once no replica uses them
            await book.close()  # after the controller: the last drained requests count too
            await meter.close()
            await usage_writer.close()
            await alerting.close()
            await access_log.close()
            await series.close()
            await keys.close()
            await audit_log.close()  # last: it writes what the final requests left
            engine.dispose()
            await asyncio.to_thread(tracer.shutdown)  # flushes spans still bound for OTLP

    app = FastAPI(title="Stratus", version=stratus.__version__, lifespan=lifespan,
                  docs_url="/docs", redoc_url=None)
    _install_error_handlers(app)
    app.include_router(deployments.router)
    app.include_router(experiments.router)
    app.include_router(blobs.router)
    app.include_router(models.router)
    app.include_router(v2.router)
    app.include_router(openai_models.router)
    app.include_router(traces_router)
    app.include_router(usage_router)
    app.include_router(alerts.router)
    app.include_router(dashboard.router)
    app.include_router(keys_router)
    app.include_router(secrets_router)
    app.include_router(master_key_router)
    app.include_router(audit_router)
    dashboard.mount_ui(app)

    @app.get("/healthz", tags=["operations"], summary="Liveness",
             dependencies=[needs(Permission.PUBLIC)])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics (every namespace)",
             dependencies=[needs(Permission.GLOBAL)],
             response_class=PlainTextResponse)
    async def metrics(request: Request) -> Response:
        parts: Components = request.app.state.components
        return Response(generate_latest(parts.metrics), media_type=CONTENT_TYPE_LATEST)

    @app.get("/readyz", tags=["operations"], summary="Readiness",
             dependencies=[needs(Permission.PUBLIC)],
             responses={503: {"description": "Starting or stopping", "content": {
                 "application/json": {"schema": {"type": "object", "properties": {
                     "status": {"type": "string"}}}}}}})
    async def readyz(request: Request) -> JSONResponse:
        parts: Components | None = getattr(request.app.state, "components", None)
        ok = parts is not None and parts.ready
        return JSONResponse({"status": "ready" if ok else "starting"}, status_code=200 if ok else 503)

    app.add_middleware(EdgeMiddleware, authenticator=authenticator, guard=guard)
    _with_data_plane_schema(app)
    auditing = AuditMiddleware(app, audit_log)  # outermost: it sees every answer, 500s too
    data_plane = DataPlane(auditing, authenticator, guard)
    data_plane.on_denied = auditing.denied
    return data_plane
