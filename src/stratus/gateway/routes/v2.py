"""Open Inference Protocol v2 (KServe / Triton) health and metadata routes under ``/v2``;
inference itself is the data plane's (``gateway/adapters/v2.py``).

A model is a deployment; its versions are the deployment's live revisions.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from stratus.control.unit import DeploymentUnit
from stratus.gateway.adapters import v2_models
from stratus.gateway.authz import needs
from stratus.gateway.openapi_errors import error_reference
from stratus.gateway.state import Components, Parts, namespace_of
from stratus.security.roles import Permission

router = APIRouter(prefix="/v2", tags=["v2"])
READY = {"type": "object", "properties": {"ready": {"type": "boolean"}}}
# A model that is not ready answers 400 with its readiness, as KServe's servers do.
NOT_READY: dict[int | str, dict[str, Any]] = {400: {
    "description": "Not ready (the body says so), or malformed input",
    "content": {"application/json": {"schema": {"anyOf": [READY, error_reference("v2")]}}}}}


@router.get("/health/live", dependencies=[needs(Permission.PUBLIC)], summary="Server liveness")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", dependencies=[needs(Permission.PUBLIC)], summary="Server readiness",
            responses={503: {"description": "Starting or stopping", "content": {
                "application/json": {"schema": READY}}}})
async def ready(parts: Parts) -> JSONResponse:
    return JSONResponse({"ready": parts.ready}, status_code=200 if parts.ready else 503)


@router.get("", dependencies=[needs(Permission.AUTHENTICATED)], summary="Server metadata")
async def server_metadata() -> dict[str, Any]:
    return v2_models.server_metadata()


def _unit(request: Request, parts: Components, name: str, version: str | None) -> DeploymentUnit:
    return v2_models.find_model(parts.controller, namespace_of(request), name, version)


@router.get("/models/{name}", dependencies=[needs(Permission.AUTHENTICATED)], summary="Model metadata")
async def model_metadata(
    name: str, request: Request, parts: Parts
) -> dict[str, Any]:
    return v2_models.model_metadata(_unit(request, parts, name, None), None)


@router.get("/models/{name}/versions/{version}",
            dependencies=[needs(Permission.AUTHENTICATED)], summary="Model version metadata")
async def model_version_metadata(
    name: str, version: str, request: Request, parts: Parts
) -> dict[str, Any]:
    return v2_models.model_metadata(_unit(request, parts, name, version), version)


@router.get("/models/{name}/ready", dependencies=[needs(Permission.AUTHENTICATED)], summary="Model readiness",
            responses=NOT_READY)
async def model_ready(
    name: str, request: Request, parts: Parts
) -> JSONResponse:
    ok = v2_models.is_ready(_unit(request, parts, name, None), None)
    return JSONResponse({"name": name, "ready": ok}, status_code=200 if ok else 400)


@router.get("/models/{name}/versions/{version}/ready", responses=NOT_READY,
            dependencies=[needs(Permission.AUTHENTICATED)], summary="Model version readiness")
async def model_version_ready(
    name: str, version: str, request: Request, parts: Parts
) -> JSONResponse:
    ok = v2_models.is_ready(_unit(request, parts, name, version), version)
    return JSONResponse({"name": name, "ready": ok}, status_code=200 if ok else 400)
