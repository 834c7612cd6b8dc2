"""``POST /api/master-key/rotate``: a new master key, and every data key re-wrapped under it
(artifacts and secrets), without rewriting what they seal. Global admins only."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request

from stratus.errors import Forbidden
from stratus.gateway.authz import needs
from stratus.gateway.state import principal_of
from stratus.security.roles import Permission
from stratus.security.rotation import rotate_master

router = APIRouter(prefix="/api/master-key", tags=["security"])


@router.post("/rotate", dependencies=[needs(Permission.GLOBAL)],
             summary="Rotate the master key: re-wrap every data key under a new one")
async def rotate(request: Request) -> dict[str, Any]:
    principal = principal_of(request)
    if not (principal.is_global and principal.is_admin):
        raise Forbidden("only a global admin may rotate the master key")
    state = request.app.state
    report: dict[str, Any] = await asyncio.to_thread(rotate_master, state.keyring,
                                                     state.wrapped_keys)
    return report
