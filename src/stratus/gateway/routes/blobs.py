"""Content-addressed uploads (code bundles, model and dataset files) and garbage collection."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from stratus.errors import BadRequest, NotFound
from stratus.gateway.authz import needs
from stratus.gateway.routes.triggers_common import TriggersDep
from stratus.gateway.state import Components, Parts
from stratus.security.roles import Permission
from stratus.spec import SHA256_PATTERN

router = APIRouter(prefix="/api", tags=["artifacts"])


def _check_digest(digest: str) -> None:
    if not re.fullmatch(SHA256_PATTERN, digest):
        raise BadRequest("a blob is addressed by its lowercase hex sha256")


async def _head(digest: str, parts: Components) -> Response:
    _check_digest(digest)
    if not await asyncio.to_thread(parts.artifacts.has_sound_blob, digest):
        raise NotFound(f"blob {digest} not found")
    return Response(status_code=200)


async def _put(digest: str, request: Request, parts: Components, limit: int) -> JSONResponse:
    _check_digest(digest)
    if await asyncio.to_thread(parts.artifacts.has_sound_blob, digest):
        return JSONResponse({"digest": digest, "created": False})
    size = await parts.artifacts.write_blob(digest, request.stream(), limit)
    return JSONResponse({"digest": digest, "size": size, "created": True}, status_code=201)


@router.head("/blobs/{digest}", dependencies=[needs(Permission.WRITE)],
             summary="Whether a blob is already uploaded")
async def has_blob(digest: str, parts: Parts) -> Response:
    return await _head(digest, parts)


@router.put("/blobs/{digest}", responses={201: {"description": "Uploaded (200: it already was)"}},
            dependencies=[needs(Permission.WRITE)], summary="Upload a blob (a model file) by its sha256")
async def put_blob(digest: str, request: Request, parts: Parts) -> JSONResponse:
    return await _put(digest, request, parts, parts.settings.max_blob_bytes)


@router.head("/bundles/{digest}", dependencies=[needs(Permission.WRITE)],
             summary="Whether a code bundle is already uploaded")
async def has_bundle(digest: str, parts: Parts) -> Response:
    return await _head(digest, parts)


@router.put("/bundles/{digest}", responses={201: {"description": "Uploaded (200: it already was)"}},
            dependencies=[needs(Permission.WRITE)], summary="Upload a code bundle (tar.gz) by its sha256")
async def put_bundle(digest: str, request: Request, parts: Parts) -> JSONResponse:
    return await _put(digest, request, parts, parts.settings.max_bundle_bytes)


class CollectRequest(BaseModel):
    grace_s: float = Field(default=3600.0, ge=0, description="keep blobs newer than this")


@router.post("/gc",
             dependencies=[needs(Permission.GLOBAL)],
             summary="Delete blobs that no model version, dataset version, revision or job "
                     "references")
async def collect(body: CollectRequest, parts: Parts, triggers: TriggersDep) -> dict[str, Any]:
    def run() -> dict[str, int]:
        referenced = (parts.models.store.all_digests() | parts.datasets.store.all_digests()
                      | parts.controller.store.all_bundles()
                      | triggers.referenced_digests())  # the code of scheduled jobs
        if parts.jobs is not None:  # jobs' code, checkpoints and models
            referenced |= parts.jobs.referenced_digests()
        return parts.artifacts.collect(referenced, body.grace_s)

    return await asyncio.to_thread(run)
