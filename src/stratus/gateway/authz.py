"""Per-route authorisation: every route declares the one permission it needs.

Control-plane routes declare it with ``dependencies=[needs(Permission.X)]``; the framework's own
routes (the schema and its viewer) and the data plane's routes declare theirs in tables here.
The route x role test walks all of them, so a route without a declared policy fails the suite.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends
from starlette.requests import Request

from stratus.errors import Forbidden, Unauthorized
from stratus.security.roles import Permission, Principal

# Routes FastAPI adds itself; the edge already demands valid credentials for them.
FRAMEWORK_ROUTES: dict[str, Permission] = {"/openapi.json": Permission.AUTHENTICATED}
# Static files, holding no data: the dashboard's page and the docs pages' scripts.
MOUNTS: dict[str, Permission] = {"/ui": Permission.PUBLIC, "/docs/assets": Permission.PUBLIC}
DATA_PLANE = Permission.INVOKE  # invoke, infer, completions, embeddings


def denial(principal: Principal, permission: Permission) -> Forbidden:
    return Forbidden(f"the {principal.role.value} role may not do this "
                     f"(it needs the {permission.value} permission)")


class Needs:
    """A FastAPI dependency that lets the request through only with ``permission``."""

    def __init__(self, permission: Permission) -> None:
        self.permission = permission

    async def __call__(self, request: Request) -> None:
        if self.permission is Permission.PUBLIC:
            return
        principal: Principal | None = request.scope.get("state", {}).get("principal")
        if principal is None:
            raise Unauthorized("missing bearer credentials")
        if not principal.allows(self.permission):
            raise denial(principal, self.permission)


def needs(permission: Permission) -> Any:
    return Depends(Needs(permission))


def declared(dependencies: list[Any]) -> Permission | None:
    """The permission a route's dependency list declares, if any (for the route table test)."""
    for dependency in dependencies:
        call = getattr(dependency, "call", None) or getattr(dependency, "dependency", None)
        if isinstance(call, Needs):
            return call.permission
    return None
