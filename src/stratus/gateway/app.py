"""The gateway's ASGI application: the data plane in front of the control-plane FastAPI app,
its routers, error handlers and edge middleware. What runs behind it is wired in
``stratus.server``."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.routing import Match

import stratus
from stratus.errors import BadRequest, InvalidJSON, MethodNotAllowed, StratusError, storage_full
from stratus.gateway.audit import AuditMiddleware
from stratus.gateway.authz import needs
from stratus.gateway.dataplane import DataPlane, openapi_paths
from stratus.gateway.docs import document_credentials, mount_docs
from stratus.gateway.edge import Authenticator
from stratus.gateway.guard import Guard
from stratus.gateway.http import error_reply
from stratus.gateway.middleware import EdgeMiddleware
from stratus.gateway.openapi_errors import document_errors
from stratus.gateway.routes import (
    alerts,
    blobs,
    dashboard,
    datasets,
    deployments,
    experiments,
    models,
    openai_models,
    session,
    v2,
)
from stratus.gateway.routes.audit import router as audit_router
from stratus.gateway.routes.invocations import router as invocations_router
from stratus.gateway.routes.jobs import router as jobs_router
from stratus.gateway.routes.keys import router as keys_router
from stratus.gateway.routes.masterkey import router as master_key_router
from stratus.gateway.routes.schedules import router as schedules_router
from stratus.gateway.routes.secrets import router as secrets_router
from stratus.gateway.routes.sources import router as sources_router
from stratus.gateway.routes.topics import router as topics_router
from stratus.gateway.routes.traces import router as traces_router
from stratus.gateway.routes.usage import router as usage_router
from stratus.gateway.routes.workflows import router as workflows_router
from stratus.gateway.state import Components
from stratus.security.audit_log import AuditLog
from stratus.security.roles import Permission

log = logging.getLogger("stratus.server")

READINESS = {"type": "object", "properties": {
    "status": {"type": "string", "enum": ["ready", "starting", "draining"]},
    "storage": {"type": "object", "description": "full: writers that find the disk full"}}}
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[dict[str, Any]]]
_HTTP_ERROR_TYPES = {404: "not_found", 413: "payload_too_large"}


def storage_view(parts: Components) -> dict[str, Any]:
    """The data dir's free space, and the writers (metadata, artifacts, usage, audit) whose
    last write found the disk full, with the error."""
    full = parts.disk.full
    try:
        stats = os.statvfs(parts.settings.data_dir)
        free: int | None = stats.f_bavail * stats.f_frsize
    except OSError:
        free = None
    return {"status": "full" if full else "ok", "free_bytes": free, "full": full}


def _respond(request: Request, error: StratusError) -> Response:
    state = request.scope.get("state", {})
    reply = error_reply(error, str(state.get("request_id", "")), state.get("principal"),
                        dict(request.headers), request.url.path)
    return Response(reply.body, status_code=reply.status, media_type="application/json",
                    headers={k.decode(): v.decode() for k, v in reply.headers})


_METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> tuple[str, ...]:
    """Every method some route serves on this path: the router's own 405 names only those of
    the first route that matched the path, and a path often has several (GET and POST).
    Each method is asked of the routes as a request would be: only 405s pay for it."""
    return tuple(method for method in _METHODS
                 if any(route.matches({**request.scope, "method": method})[0] is Match.FULL
                        for route in request.app.router.routes))


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
        if exc.status_code == 405:
            return _respond(request, MethodNotAllowed(
                f"{request.method} is not allowed on {request.url.path}",
                allow=_allowed_methods(request)))
        error = StratusError(str(exc.detail))
        error.status = exc.status_code
        error.type = _HTTP_ERROR_TYPES.get(exc.status_code, "http_error")
        return _respond(request, error)

    async def unexpected(request: Request, exc: Exception) -> Response:
        full = storage_full(exc)  # a file write (an upload, say) that found the disk full
        if full is not None:
            return _respond(request, full)
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
            document_credentials(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def build(lifespan: Lifespan, authenticator: Authenticator, guard: Guard,
          audit_log: AuditLog) -> DataPlane:
    """The ASGI app: the data plane in front of the control-plane FastAPI app, whose
    ``lifespan`` starts and stops the server's components (``stratus.server``)."""
    app = FastAPI(title="Stratus", version=stratus.__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    _install_error_handlers(app)
    app.include_router(deployments.router)
    app.include_router(experiments.router)
    app.include_router(blobs.router)
    app.include_router(models.router)
    app.include_router(datasets.router)
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
    app.include_router(schedules_router)
    app.include_router(topics_router)
    app.include_router(sources_router)
    app.include_router(invocations_router)
    app.include_router(workflows_router)
    app.include_router(jobs_router)
    app.include_router(session.router)
    dashboard.mount_ui(app)
    mount_docs(app)

    @app.get("/", include_in_schema=False, dependencies=[needs(Permission.PUBLIC)])
    async def home() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=307)

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
             responses={503: {"description": "Starting, draining (after SIGTERM) or stopping",
                              "content": {"application/json": {"schema": READINESS}}}})
    async def readyz(request: Request) -> JSONResponse:
        parts: Components | None = getattr(request.app.state, "components", None)
        if parts is None or not parts.ready:
            status = "draining" if parts is not None and parts.draining else "starting"
            return JSONResponse({"status": status}, status_code=503)
        # A full disk stops writes, not serving: still ready, and says so.
        return JSONResponse({"status": "ready", "storage": storage_view(parts)})

    app.add_middleware(EdgeMiddleware, authenticator=authenticator, guard=guard)
    _with_data_plane_schema(app)
    auditing = AuditMiddleware(app, audit_log)  # outermost: it sees every answer, 500s too
    data_plane = DataPlane(auditing, authenticator, guard)
    data_plane.on_denied = auditing.denied
    app.state.data_plane = data_plane  # the lifespan hands it the components once they run
    app.state.authenticator = authenticator
    return data_plane
