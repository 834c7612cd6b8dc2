"""What every request goes through first: a request id, then authentication.

Plain functions over the ASGI scope, shared by the data plane and the control-plane
middleware so both apply the very same rules.
"""

from __future__ import annotations

import hmac
import os
import re

from starlette.types import Scope

from stratus.errors import BadRequest, StratusError, Unauthorized
from stratus.security.roles import Principal, Role

DEFAULT_NAMESPACE = "default"
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"})
UI_PREFIX = "/ui"  # the dashboard's static page and assets; the page itself sends the key
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
_NAMESPACE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def scope_header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def is_public(path: str) -> bool:
    """Routes served without credentials: health checks and the dashboard's static files."""
    return path in PUBLIC_PATHS or path == UI_PREFIX or path.startswith(UI_PREFIX + "/")


def assign_request_id(scope: Scope) -> bytes:
    """The client's ``X-Request-Id`` when it is sane, else a fresh one; kept in scope state."""
    given = scope_header(scope, b"x-request-id")
    raw = given if given is not None and _REQUEST_ID.fullmatch(given) else os.urandom(8).hex().encode()
    scope.setdefault("state", {})["request_id"] = raw.decode()
    return raw


class Authenticator:
    """Bearer-key authentication: one admin key guards every route except health checks."""

    def __init__(self, admin_key: str) -> None:
        self.admin_key = admin_key.encode()

    def authenticate(self, scope: Scope) -> Principal | StratusError:
        authorization = scope_header(scope, b"authorization") or b""
        scheme, _, token = authorization.partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            return Unauthorized("missing bearer credentials")
        if not hmac.compare_digest(token.strip(), self.admin_key):
            return Unauthorized("invalid API key")
        namespace = (scope_header(scope, b"x-stratus-namespace") or b"").decode(errors="replace")
        if namespace and not _NAMESPACE.fullmatch(namespace):
            return BadRequest("invalid namespace name")
        principal = Principal(namespace or DEFAULT_NAMESPACE, Role.ADMIN, "bootstrap", is_global=True)
        state = scope.setdefault("state", {})
        state["principal"] = principal
        return principal
