"""The model registry's routes under ``/api/models``."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from stratus.errors import Conflict, NotFound
from stratus.gateway.authz import needs
from stratus.gateway.routes.blobs import share_referenced
from stratus.gateway.state import Parts, namespace_of
from stratus.models.registry import check_stage
from stratus.models.service import ModelPushRequest
from stratus.security.roles import Permission

router = APIRouter(prefix="/api/models", tags=["models"])


@router.get("", dependencies=[needs(Permission.READ)], summary="List models")
async def list_models(request: Request, parts: Parts) -> dict[str, Any]:
    return {"models": await asyncio.to_thread(parts.models.summaries, namespace_of(request))}


@router.get("/{name}", dependencies=[needs(Permission.READ)], summary="A model and its versions")
async def get_model(name: str, request: Request, parts: Parts) -> dict[str, Any]:
    versions = await asyncio.to_thread(parts.models.store.versions, namespace_of(request), name)
    if not versions:
        raise NotFound(f"model {name!r} not found")
    return {"name": name, "versions": [record.view() for record in versions]}


@router.post("/{name}/versions",
             dependencies=[needs(Permission.WRITE)], summary="Register a version whose files are uploaded",
             status_code=201)
async def push_version(name: str, body: ModelPushRequest, request: Request,
                       parts: Parts) -> JSONResponse:
    namespace = namespace_of(request)
    await share_referenced(request, parts, (entry.sha256 for entry in body.files.values()))
    record = await asyncio.to_thread(parts.models.push, namespace, name, body)
    # A version pushed straight into a stage moves the deployments that follow it.
    followed = await parts.controller.follow_model(namespace, name)
    return JSONResponse({**record.view(), "deployments_updated": followed}, status_code=201)


@router.get("/{name}/versions/{version}", dependencies=[needs(Permission.READ)], summary="One version")
async def get_version(name: str, version: str, request: Request, parts: Parts) -> dict[str, Any]:
    for record in await asyncio.to_thread(parts.models.store.versions, namespace_of(request), name):
        if record.version == version:
            return record.view()
    raise NotFound(f"model {name!r} has no version {version}")


class PromoteRequest(BaseModel):
    stage: str


@router.post("/{name}/versions/{version}/promote",
             dependencies=[needs(Permission.WRITE)], summary="Move a version to a stage")
async def promote(name: str, version: str, body: PromoteRequest, request: Request,
                  parts: Parts) -> dict[str, Any]:
    namespace = namespace_of(request)
    check_stage(body.stage)
    record = await asyncio.to_thread(parts.models.store.promote, namespace, name, version, body.stage)
    followed = await parts.controller.follow_model(namespace, name)
    return {**record.view(), "deployments_updated": followed}


def _refuse_if_used(parts: Parts, namespace: str, name: str, version: str | None) -> None:
    users = parts.controller.models_in_use(namespace, name, version)
    if users:
        what = f"{name}@{version}" if version else f"model {name}"
        raise Conflict(f"{what} is used by {', '.join(users)}; redeploy or delete those first")


@router.delete("/{name}/versions/{version}",
               dependencies=[needs(Permission.WRITE)], summary="Delete a version no live deployment uses")
async def delete_version(name: str, version: str, request: Request, parts: Parts) -> dict[str, Any]:
    namespace = namespace_of(request)
    _refuse_if_used(parts, namespace, name, version)
    await asyncio.to_thread(parts.models.store.delete_version, namespace, name, version)
    return {"deleted": f"{name}@{version}"}


@router.delete("/{name}",
               dependencies=[needs(Permission.WRITE)], summary="Delete a model and all its versions")
async def delete_model(name: str, request: Request, parts: Parts) -> dict[str, Any]:
    namespace = namespace_of(request)
    _refuse_if_used(parts, namespace, name, None)
    await asyncio.to_thread(parts.models.store.delete_model, namespace, name)
    return {"deleted": name}
