"""Per-namespace secrets under ``/api/secrets``: set, list (names and times) and delete. A
value goes in once and never comes back out through the API."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from stratus.errors import BadRequest, Conflict, NotFound, PayloadTooLarge
from stratus.gateway.authz import needs
from stratus.gateway.state import Parts, namespace_of
from stratus.security.roles import Permission
from stratus.spec import SECRET_NAME_PATTERN
from stratus.store.secrets import SecretStore

router = APIRouter(prefix="/api/secrets", tags=["secrets"])
MAX_VALUE_BYTES = 64 * 1024


class SecretValue(BaseModel):
    """Body of ``PUT /api/secrets/{name}``."""

    model_config = ConfigDict(extra="forbid")

    value: str


def _store(request: Request) -> SecretStore:
    store: SecretStore = request.app.state.secrets
    return store


def _check_name(name: str) -> None:
    if not re.fullmatch(SECRET_NAME_PATTERN, name):
        raise BadRequest("a secret name is 1 to 128 letters, digits, '.', '_' or '-', starting "
                         "and ending with a letter or a digit")


@router.put("/{name}", dependencies=[needs(Permission.WRITE)],
            responses={201: {"description": "Created (200: replaced)"}},
            summary="Set a secret (created, or replaced); its value is never returned")
async def put_secret(name: str, body: SecretValue, request: Request) -> JSONResponse:
    _check_name(name)
    if len(body.value.encode()) > MAX_VALUE_BYTES:
        raise PayloadTooLarge(f"a secret's value holds at most {MAX_VALUE_BYTES} bytes")
    if "\x00" in body.value:
        raise BadRequest("a secret's value cannot hold a NUL character: it becomes an "
                         "environment variable")
    info, created = await asyncio.to_thread(_store(request).put, namespace_of(request), name,
                                            body.value)
    return JSONResponse({**info.view(), "created": created}, status_code=201 if created else 200)


@router.get("", dependencies=[needs(Permission.READ)],
            summary="The namespace's secrets: names and times, never values")
async def list_secrets(request: Request) -> dict[str, Any]:
    infos = await asyncio.to_thread(_store(request).infos, namespace_of(request))
    return {"secrets": [info.view() for info in infos]}


@router.delete("/{name}", dependencies=[needs(Permission.WRITE)],
               summary="Delete a secret no live deployment reads")
async def delete_secret(name: str, request: Request, parts: Parts) -> dict[str, Any]:
    _check_name(name)
    namespace = namespace_of(request)
    users = parts.controller.secrets_in_use(namespace, name)
    if users:
        raise Conflict(f"secret {name!r} is read by {', '.join(users)}; redeploy or delete "
                       "those first")
    if not await asyncio.to_thread(_store(request).delete, namespace, name):
        raise NotFound(f"secret {name!r} not found")
    return {"deleted": name}
