"""What every request goes through first: a request id, then authentication.

Plain functions over the ASGI scope, shared by the data plane and the control-plane
middleware so both apply the very same rules.
"""

from __future__ import annotations

import hmac
import os
import random
import re
import time
from typing import NamedTuple

from starlette.types import Scope

from stratus.errors import BadRequest, NotFound, StratusError, Unauthorized
from stratus.resilience.priority import Priority
from stratus.security.keys import KEY_MARK, KeyRecord, KeyRing
from stratus.security.roles import GLOBAL_NAMESPACE, Principal, Role
from stratus.security.sessions import BOOTSTRAP, SessionSigner
from stratus.security.tokens import JwtVerifier, looks_like_jwt

DEFAULT_NAMESPACE = "default"
PUBLIC_PATHS = frozenset({"/", "/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"})
DOCS_ASSETS = "/docs/assets"  # Swagger UI's and ReDoc's scripts: no data in them
UI_PREFIX = "/ui"  # the dashboard's static page and assets; the page itself sends the key
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
# Request ids name requests in logs and traces; they need to be unique, not secret. A
# generator seeded once from the OS costs a fraction of ``os.urandom``'s system call per
# request (3% of the gateway's time at 32 connections, by py-spy).
_ids = random.Random(os.urandom(16))
_NAMESPACE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


class Identity(NamedTuple):
    """Whom valid credentials name, before the namespace a request asks for is applied."""

    home: str  # the credential's namespace; ``*`` for a global one
    role: Role
    actor: str
    key_id: str | None = None
    priority: Priority = Priority.NORMAL  # without a header (``Principal.priority``)
    max_priority: Priority = Priority.NORMAL


# The operator's own key: its requests are normal unless they ask, and may ask for critical.
BOOTSTRAP_IDENTITY = Identity(GLOBAL_NAMESPACE, Role.ADMIN, "bootstrap",
                              max_priority=Priority.CRITICAL)


def key_identity(record: KeyRecord) -> Identity:
    """An API key's identity: its priority is both its default and its ceiling."""
    return Identity(record.namespace, Role(record.role), f"key:{record.id}", record.id,
                    record.priority, record.priority)


def scope_header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def is_public(path: str) -> bool:
    """Routes served without credentials: health checks, ``/`` (a redirect) and the static
    files of the dashboard and of the docs pages."""
    return (path in PUBLIC_PATHS or path == UI_PREFIX or path.startswith(UI_PREFIX + "/")
            or path.startswith(DOCS_ASSETS + "/"))


def request_id_of(given: bytes | None) -> bytes:
    """The client's request id when it is sane, else a fresh one."""
    if given is not None and _REQUEST_ID.fullmatch(given):
        return given
    return b"%016x" % _ids.getrandbits(64)


def assign_request_id(scope: Scope) -> bytes:
    """The client's ``X-Request-Id`` when it is sane, else a fresh one; kept in scope state."""
    raw = request_id_of(scope_header(scope, b"x-request-id"))
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
        self.sessions: SessionSigner | None = None  # browser sessions, once the master key is in

    def authenticate(self, scope: Scope) -> Principal | StratusError:
        principal = self.authenticate_values(scope_header(scope, b"authorization"),
                                             scope_header(scope, b"x-stratus-namespace"))
        if not isinstance(principal, StratusError):
            scope.setdefault("state", {})["principal"] = principal
        return principal

    def authenticate_values(self, authorization: bytes | None,
                            namespace: bytes | None) -> Principal | StratusError:
        """The principal of an ``authorization`` value (``Bearer <credential>``), acting in the
        namespace an ``x-stratus-namespace`` value asks for: an HTTP request's headers or a
        gRPC call's metadata alike."""
        scheme, _, token = (authorization or b"").partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            return Unauthorized("missing bearer credentials")
        identity = self._identify(token)
        if isinstance(identity, StratusError):
            return identity
        return self._acting(namespace, identity)

    def authenticate_session(self, scope: Scope, token: str) -> Principal | StratusError:
        """The principal of a browser session's cookie: its signature and expiry, then its key,
        checked again now (a revoked or expired key ends the session at once)."""
        if self.sessions is None:
            return Unauthorized("browser sessions are not available")
        session = self.sessions.verify(token, time.time())
        if isinstance(session, str):
            return Unauthorized(session)
        asked = scope_header(scope, b"x-stratus-namespace")
        principal: Principal | StratusError
        if session.key_id == BOOTSTRAP:
            principal = self._acting(asked, BOOTSTRAP_IDENTITY)
        else:
            record = self.keys.get(session.key_id)
            if record is None:
                return Unauthorized("invalid session cookie")
            if record.revoked_at is not None:
                return Unauthorized("API key revoked")
            if record.expires_at is not None and record.expires_at.timestamp() <= time.time():
                return Unauthorized("API key expired")
            principal = self._acting(asked, key_identity(record))
        if not isinstance(principal, StratusError):
            scope.setdefault("state", {})["principal"] = principal
        return principal

    def _acting(self, asked_for: bytes | None, identity: Identity) -> Principal | StratusError:
        """The principal, acting in the namespace ``X-Stratus-Namespace`` asks for if it may."""
        home = identity.home
        asked = (asked_for or b"").decode(errors="replace")
        if asked and not _NAMESPACE.fullmatch(asked):
            return BadRequest("invalid namespace name")
        is_global = home == GLOBAL_NAMESPACE
        if is_global:
            namespace = asked or DEFAULT_NAMESPACE
        elif asked and asked != home:
            return NotFound(f"namespace {asked!r} not found")
        else:
            namespace = home
        return Principal(namespace, identity.role, identity.actor, is_global, identity.key_id,
                         identity.priority, identity.max_priority)

    def _identify(self, token: bytes) -> Identity | StratusError:
        """Whom valid credentials name."""
        if hmac.compare_digest(token, self.bootstrap_key):
            return BOOTSTRAP_IDENTITY
        if token.startswith(KEY_MARK):
            record = self.keys.check(token)
            if isinstance(record, str):
                return Unauthorized(record)
            return key_identity(record)
        if self.tokens is not None and looks_like_jwt(token):
            claims = self.tokens.verify(token.decode("ascii", errors="replace"))
            if isinstance(claims, str):
                return Unauthorized(claims)
            return Identity(claims.namespace, claims.role, f"jwt:{claims.subject}", None,
                            claims.priority, claims.priority)
        return Unauthorized("invalid API key")
