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
from stratus.backends.local import LocalBackend
from stratus.config import Settings
from stratus.control.controller import Controller
from stratus.control.experiments import ExperimentBook
from stratus.dispatch.dispatcher import Dispatcher
from stratus.errors import BadRequest, InvalidJSON, StratusError
from stratus.gateway import alerts, blobs, dashboard, deployments, experiments, models, openai_models, v2
from stratus.gateway.dataplane import DataPlane, openapi_paths
from stratus.gateway.edge import Authenticator
from stratus.gateway.http import error_reply
from stratus.gateway.middleware import EdgeMiddleware
from stratus.gateway.state import Components
from stratus.gateway.traces import router as traces_router
from stratus.gateway.usage import router as usage_router
from stratus.models.service import ModelService
from stratus.observe import tracing
from stratus.observe.alerts import AlertManager, alerts_config
from stratus.observe.cost import prices_from
from stratus.observe.logs import AccessLog
from stratus.observe.metrics import registry_for
from stratus.observe.request_metrics import RequestMetrics
from stratus.observe.series import SeriesBook
from stratus.observe.usage import controller_meter
from stratus.store.artifacts import ArtifactStore
from stratus.store.db import make_engine, migrate, sqlite_url
from stratus.store.experiments import ExperimentStore
from stratus.store.metadata import MetadataStore
from stratus.store.models import ModelStore
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
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings) -> DataPlane:
    """The ASGI app: the data plane in front of the control-plane FastAPI app."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    authenticator = Authenticator(settings.admin_key)
    alerting = AlertManager(alerts_config(settings.section("alerts")))  # invalid: fail now
    prices = prices_from(settings.section("prices"))
    tracing.parse_config(settings.section("tracing"))  # invalid: fail now

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        engine = make_engine(settings.database_url or sqlite_url(settings.data_dir))
        await asyncio.to_thread(migrate, engine)
        artifacts = ArtifactStore(settings.artifacts_dir)
        dispatcher = Dispatcher()
        backend = LocalBackend(settings.run_dir, settings.log_dir)
        model_service = ModelService(ModelStore(engine), artifacts)
        controller = Controller(settings, MetadataStore(engine), artifacts, backend, dispatcher,
                                model_service)
        parts = Components(settings, controller, dispatcher, artifacts, registry_for(controller),
                           model_service)
        request_metrics = RequestMetrics(parts.metrics)
        dispatcher.listeners.append(request_metrics.observe)
        controller.on_replica_started.append(request_metrics.replica_started)
        controller.on_deleted.append(request_metrics.forget)
        app.state.components = parts
        app.state.tracing = tracer = tracing.install(settings.section("tracing"))
        dispatcher.listeners += [AccessLog(), alerting.observe]
        controller.router.on_alert = alerting.one_shot
        app.state.alerts = alerting
        await alerting.start()
        parts.usage = meter = controller_meter(UsageStore(engine), controller, prices)
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
            await book.close()  # after the controller: the last drained requests count too
            await meter.close()
            await alerting.close()
            await series.close()
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
    dashboard.mount_ui(app)

    @app.get("/healthz", tags=["operations"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics",
             response_class=PlainTextResponse)
    async def metrics(request: Request) -> Response:
        parts: Components = request.app.state.components
        return Response(generate_latest(parts.metrics), media_type=CONTENT_TYPE_LATEST)

    @app.get("/readyz", tags=["operations"], summary="Readiness")
    async def readyz(request: Request) -> JSONResponse:
        parts: Components | None = getattr(request.app.state, "components", None)
        ok = parts is not None and parts.ready
        return JSONResponse({"status": "ready" if ok else "starting"}, status_code=200 if ok else 503)

    app.add_middleware(EdgeMiddleware, authenticator=authenticator)
    _with_data_plane_schema(app)
    data_plane = DataPlane(app, authenticator)
    return data_plane
