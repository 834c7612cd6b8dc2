"""The dashboard: its JSON routes under ``/api`` and its static page at ``/ui/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import RedirectResponse
from starlette.staticfiles import StaticFiles

from stratus.gateway.authz import needs
from stratus.gateway.state import Parts, namespace_of
from stratus.observe.series import KEEP_S, SeriesBook
from stratus.security.roles import Permission

UI_DIR = Path(__file__).resolve().parents[2] / "ui"

router = APIRouter(prefix="/api", tags=["dashboard"])


def _book(request: Request) -> SeriesBook:
    book: SeriesBook = request.app.state.series
    return book


@router.get("/dashboard", dependencies=[needs(Permission.READ)], summary="Every deployment at a glance")
async def dashboard(
    request: Request, parts: Parts, window: int = Query(60, ge=1, le=KEEP_S)
) -> dict[str, Any]:
    """Per deployment: status, replicas by state, and over the last ``window`` seconds the
    RPS, p50/p99 latency, error ratio, the requests that waited for a replica to start
    (``cold_start_requests``) and the replicas started (``replica_starts``)."""
    book = _book(request)
    rows = []
    for unit in parts.controller.list_units(namespace_of(request)):
        view = unit.view()
        replicas = {k: view["replicas"][k] for k in ("ready", "starting", "draining", "desired")}
        rows.append({
            "name": unit.name,
            "namespace": unit.namespace,
            "status": view["status"],
            "reason": view["reason"],
            "revision": view["revision"],
            "traffic": view["traffic"],
            "replicas": replicas,
            "queued": view["queued"],
            **book.summary(unit.key, window),
        })
    return {"window_s": window, "deployments": rows}


@router.get("/deployments/{name}/series",
            dependencies=[needs(Permission.READ)], summary="A deployment's per-second time series")
async def deployment_series(
    name: str, request: Request, parts: Parts, window: int = Query(300, ge=10, le=KEEP_S)
) -> dict[str, Any]:
    """Columns, one value a second: requests, errors, requests that waited for a replica to
    start, replica starts, p50/p99 latency (ms), concurrency (running or queued, peak of the
    second), queued and replicas by state."""
    unit = parts.controller.get_unit(namespace_of(request), name)
    return {"deployment": name, **_book(request).points(unit.key, window)}


@router.get("/deployments/{name}/invocations",
            dependencies=[needs(Permission.READ)], summary="A deployment's recent invocations")
async def recent_invocations(
    name: str, request: Request, parts: Parts, limit: int = Query(50, ge=1, le=100)
) -> dict[str, Any]:
    unit = parts.controller.get_unit(namespace_of(request), name)
    return {"deployment": name, "invocations": _book(request).recent(unit.key, limit)}


def mount_ui(app: FastAPI) -> None:
    """Serve the page and its assets. They hold no data, so they need no API key; the page
    asks for the key and sends it with every API call."""

    @app.get("/ui", include_in_schema=False, dependencies=[needs(Permission.PUBLIC)])
    async def ui_redirect() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=308)

    app.mount("/ui", StaticFiles(directory=UI_DIR, html=True), name="ui")
