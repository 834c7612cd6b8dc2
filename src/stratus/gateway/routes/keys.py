"""API key routes: create (the key is shown once), list, revoke. Namespace admins manage their
own namespace's keys; only the global admin mints global keys or sees every namespace's."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from stratus.errors import BadRequest, NotFound
from stratus.gateway.authz import needs
from stratus.gateway.state import principal_of
from stratus.resilience.priority import priority_named
from stratus.security.keys import KeyService, key_view, mint
from stratus.security.roles import Permission, Principal, Role

router = APIRouter(prefix="/api/keys", tags=["keys"])

NAMESPACE_PATTERN = r"^(\*|[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)$"


class KeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role
    namespace: str | None = Field(None, pattern=NAMESPACE_PATTERN,
                                  description="The key's namespace (default: the caller's); "
                                              "``*`` for a global admin key")
    expires_in_s: float | None = Field(None, gt=0, le=10 * 365 * 86400)
    description: str = Field("", max_length=200)
    rate_limit_rps: float | None = Field(None, gt=0, description="Requests per second")
    priority: Literal["low", "normal", "critical"] = Field(
        "normal", description="Under adaptive load shedding: the priority of the key's "
                              "requests without an X-Stratus-Priority header, and the most "
                              "the header may ask for (above it, it is lowered to it)")


def _service(request: Request) -> KeyService:
    service: KeyService = request.app.state.keys
    return service


def _visible(principal: Principal, namespace: str) -> bool:
    return principal.is_global or namespace == principal.namespace


@router.post("", dependencies=[needs(Permission.ADMIN)], status_code=201,
             summary="Create an API key; the key itself is in this response only")
async def create_key(body: KeyRequest, request: Request) -> dict[str, Any]:
    principal = principal_of(request)
    namespace = body.namespace or principal.namespace
    if not _visible(principal, namespace):  # another namespace, or ``*`` for a namespaced admin
        raise NotFound(f"namespace {namespace!r} not found")
    try:
        minted = mint(namespace, body.role, created_by=principal.actor, description=body.description,
                      expires_in_s=body.expires_in_s, rate_limit_rps=body.rate_limit_rps,
                      priority=priority_named(body.priority))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    await _service(request).create(minted)
    return {**key_view(minted.record), "key": minted.key}


@router.get("", dependencies=[needs(Permission.ADMIN)], summary="List API keys (never the secrets)")
async def list_keys(request: Request) -> dict[str, Any]:
    principal = principal_of(request)
    records = [record for record in _service(request).ring.records()
               if principal.is_global or record.namespace == principal.namespace]
    return {"keys": [key_view(record) for record in sorted(records, key=lambda r: r.created_at)]}


@router.delete("/{key_id}", dependencies=[needs(Permission.ADMIN)], summary="Revoke an API key")
async def revoke_key(key_id: str, request: Request) -> dict[str, Any]:
    principal = principal_of(request)
    service = _service(request)
    record = service.ring.get(key_id)
    if record is None or not _visible(principal, record.namespace):
        raise NotFound(f"API key {key_id!r} not found")
    revoked = await service.revoke(key_id)
    assert revoked is not None
    return key_view(revoked)
