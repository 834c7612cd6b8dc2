"""What every request goes through first: a request id, then authentication.

Plain functions over the ASGI scope, shared by the data plane and the control-plane
middleware so both apply the very same rules.
"""

from __future__ import annotations

import hmac
import os
import re

from starlette.types import Scope

from stratus.errors import BadRequest, NotFound, StratusError, Unauthorized
from stratus.security.keys import KEY_MARK, KeyRing
from stratus.security.roles import GLOBAL_NAMESPACE, Principal, Role
from stratus.security.tokens import JwtVerifier, looks_like_jwt

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
    """Bearer credentials -> a Principal: the bootstrap admin key, an API key, or a JWT.

    A global credential acts in the namespace ``X-Stratus-Namespace`` names (``default``
    without one). A namespaced credential acts in its own namespace; naming any other answers
    404, as if it did not exist, so that namespaces cannot be enumerated.
    """

    def __init__(self, bootstrap_key: str, keys: KeyRing | None = None,
                 tokens: JwtVerifier | None = None) -> None:
        self.bootstrap_key = bootstrap_key.encode()
        self.keys = keys or KeyRing()
        self.tokens = tokens

    def authenticate(self, scope: Scope) -> Principal | StratusError:
        authorization = scope_header(scope, b"authorization") or b""
        scheme, _, token = authorization.partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            return Unauthorized("missing bearer credentials")
        identity = self._identify(token)
        if isinstance(identity, StratusError):
            return identity
        home, role, actor, key_id = identity
        asked = (scope_header(scope, b"x-stratus-namespace") or b"").decode(errors="replace")
        if asked and not _NAMESPACE.fullmatch(asked):
            return BadRequest("invalid namespace name")
        is_global = home == GLOBAL_NAMESPACE
        if is_global:
            namespace = asked or DEFAULT_NAMESPACE
        elif asked and asked != home:
            return NotFound(f"namespace {asked!r} not found")
        else:
            namespace = home
        principal = Principal(namespace, role, actor, is_global, key_id)
        scope.setdefault("state", {})["principal"] = principal
        return principal

    def _identify(self, token: bytes) -> tuple[str, Role, str, str | None] | StratusError:
        """(home namespace, role, actor, key id) of valid credentials."""
        if hmac.compare_digest(token, self.bootstrap_key):
            return GLOBAL_NAMESPACE, Role.ADMIN, "bootstrap", None
        if token.startswith(KEY_MARK):
            record = self.keys.check(token)
            if isinstance(record, str):
                return Unauthorized(record)
            return record.namespace, Role(record.role), f"key:{record.id}", record.id
        if self.tokens is not None and looks_like_jwt(token):
            claims = self.tokens.verify(token.decode("ascii", errors="replace"))
            if isinstance(claims, str):
                return Unauthorized(claims)
            return claims.namespace, claims.role, f"jwt:{claims.subject}", None
        return Unauthorized("invalid API key")
