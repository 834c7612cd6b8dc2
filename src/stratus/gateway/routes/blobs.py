"""Content-addressed uploads (code bundles, model and dataset files), which a namespace sees only
once it has uploaded them itself or been given them; sharing with a namespace; garbage collection."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from stratus.errors import BadRequest, NotFound
from stratus.gateway.audit import note_target
from stratus.gateway.authz import needs
from stratus.gateway.routes.triggers_common import TriggersDep
from stratus.gateway.state import Components, Parts, namespace_of, principal_of
from stratus.security.roles import Permission
from stratus.spec import NAME_PATTERN, SHA256_PATTERN

router = APIRouter(prefix="/api", tags=["artifacts"])


def _check_digest(digest: str) -> None:
    if not re.fullmatch(SHA256_PATTERN, digest):
        raise BadRequest("a blob is addressed by its lowercase hex sha256")


async def share_referenced(request: Request, parts: Components, digests: Iterable[str]) -> None:
    """A global admin sees every stored blob, so what it references while acting in a
    namespace (a deploy, a push, a job) becomes that namespace's; for anyone else, nothing."""
    principal = principal_of(request)
    if principal.is_global:
        await asyncio.to_thread(parts.blobs.adopt, principal.namespace, list(digests))


async def _head(digest: str, request: Request, parts: Components) -> Response:
    _check_digest(digest)
    principal = principal_of(request)
    if principal.is_global:
        found = await asyncio.to_thread(parts.artifacts.has_sound_blob, digest)
    else:
        found = await asyncio.to_thread(parts.blobs.visible, principal.namespace, digest)
    if not found:  # another namespace's digest: exactly the answer of one never stored
        raise NotFound(f"blob {digest} not found")
    return Response(status_code=200)


async def _put(digest: str, request: Request, parts: Components, limit: int) -> JSONResponse:
    _check_digest(digest)
    uploaded = await parts.blobs.upload(namespace_of(request), digest, request.stream(), limit)
    return JSONResponse({"digest": digest, "size": uploaded.size, "created": uploaded.created},
                        status_code=201 if uploaded.created else 200)


_PUT_ANSWERS: dict[int | str, dict[str, Any]] = {
    201: {"description": "Uploaded: the namespace owns the digest now (200: it already did). "
                         "The same whether or not another namespace had stored the bytes"}}


@router.head("/blobs/{digest}", dependencies=[needs(Permission.WRITE)],
             summary="Whether the namespace has uploaded a blob")
async def has_blob(digest: str, request: Request, parts: Parts) -> Response:
    return await _head(digest, request, parts)


@router.put("/blobs/{digest}", responses=_PUT_ANSWERS, dependencies=[needs(Permission.WRITE)],
            summary="Upload a blob (a model file) by its sha256")
async def put_blob(digest: str, request: Request, parts: Parts) -> JSONResponse:
    return await _put(digest, request, parts, parts.settings.max_blob_bytes)


@router.head("/bundles/{digest}", dependencies=[needs(Permission.WRITE)],
             summary="Whether the namespace has uploaded a code bundle")
async def has_bundle(digest: str, request: Request, parts: Parts) -> Response:
    return await _head(digest, request, parts)


@router.put("/bundles/{digest}", responses=_PUT_ANSWERS, dependencies=[needs(Permission.WRITE)],
            summary="Upload a code bundle (tar.gz) by its sha256")
async def put_bundle(digest: str, request: Request, parts: Parts) -> JSONResponse:
    return await _put(digest, request, parts, parts.settings.max_bundle_bytes)


class ShareRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespace: str = Field(pattern=NAME_PATTERN, description="the namespace to give the blob")


@router.post("/blobs/{digest}/shares", dependencies=[needs(Permission.GLOBAL)], status_code=201,
             responses={200: {"description": "The namespace owned it already"}},
             summary="Share a stored blob with a namespace")
async def share_blob(digest: str, body: ShareRequest, request: Request,
                     parts: Parts) -> JSONResponse:
    """The namespace may then see, reference and deploy the digest as if it had uploaded it.
    An unknown digest is a 404."""
    _check_digest(digest)
    note_target(request, f"{digest} {body.namespace}")
    created = await asyncio.to_thread(parts.blobs.share, digest, body.namespace)
    return JSONResponse({"digest": digest, "namespace": body.namespace, "created": created},
                        status_code=201 if created else 200)


class CollectRequest(BaseModel):
    grace_s: float = Field(default=3600.0, ge=0, description="keep blobs newer than this")


@router.post("/gc",
             dependencies=[needs(Permission.GLOBAL)],
             summary="Delete blobs that no model version, dataset version, revision or job "
                     "references, and their ownership")
async def collect(body: CollectRequest, parts: Parts, triggers: TriggersDep) -> dict[str, Any]:
    def run() -> dict[str, int]:
        referenced = (parts.models.store.all_digests() | parts.datasets.store.all_digests()
                      | parts.controller.store.all_bundles()
                      | triggers.referenced_digests())  # the code of scheduled jobs
        if parts.jobs is not None:  # jobs' code, checkpoints and models
            referenced |= parts.jobs.referenced_digests()
        return parts.blobs.collect(referenced, body.grace_s)

    return await asyncio.to_thread(run)
