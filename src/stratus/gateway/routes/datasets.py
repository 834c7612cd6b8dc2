"""The datasets' routes under ``/api/datasets``: push a version whose files are uploaded, list,
show a version (schema, rows, splits, preview) and delete."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from stratus.datasets.service import DatasetPushRequest
from stratus.gateway.authz import needs
from stratus.gateway.routes.blobs import share_referenced
from stratus.gateway.state import Parts, namespace_of
from stratus.security.roles import Permission

router = APIRouter(prefix="/api/datasets", tags=["datasets"])


@router.post("/{name}/versions", dependencies=[needs(Permission.WRITE)], status_code=201,
             responses={200: {"description": "The same content was already this version"},
                        409: {"description": "The version exists with other content"}},
             summary="Record a dataset version whose files are uploaded")
async def push_version(name: str, body: DatasetPushRequest, request: Request,
                       parts: Parts) -> JSONResponse:
    await share_referenced(request, parts, (entry.sha256 for entry in body.files.values()))
    view, created = await asyncio.to_thread(parts.datasets.push, namespace_of(request), name, body)
    return JSONResponse(view, status_code=201 if created else 200)


@router.get("", dependencies=[needs(Permission.READ)], summary="List datasets")
async def list_datasets(request: Request, parts: Parts) -> dict[str, Any]:
    found = await asyncio.to_thread(parts.datasets.list_datasets, namespace_of(request))
    return {"datasets": found}


@router.get("/{name}", dependencies=[needs(Permission.READ)], summary="A dataset and its versions")
async def get_dataset(name: str, request: Request, parts: Parts) -> dict[str, Any]:
    return await asyncio.to_thread(parts.datasets.show, namespace_of(request), name)


@router.get("/{name}/versions/{version}", dependencies=[needs(Permission.READ)],
            summary="One version: schema, rows, splits and a preview")
async def get_version(name: str, version: str, request: Request, parts: Parts,
                      split: str | None = Query(None, description="preview this split")
                      ) -> dict[str, Any]:
    return await asyncio.to_thread(parts.datasets.preview, namespace_of(request), name, version,
                                   split)


@router.delete("/{name}/versions/{version}", dependencies=[needs(Permission.WRITE)],
               summary="Delete a dataset version")
async def delete_version(name: str, version: str, request: Request, parts: Parts) -> dict[str, Any]:
    gone = await asyncio.to_thread(parts.datasets.delete, namespace_of(request), name, version)
    return {"deleted": gone}


@router.delete("/{name}", dependencies=[needs(Permission.WRITE)],
               summary="Delete a dataset and all its versions")
async def delete_dataset(name: str, request: Request, parts: Parts) -> dict[str, Any]:
    gone = await asyncio.to_thread(parts.datasets.delete, namespace_of(request), name, None)
    return {"deleted": gone}
