"""The browser session: sign in with an API key (the server sets a signed, HTTP-only cookie),
see who is signed in, sign out. The cookie's rules at the edge are in ``gateway.browser``."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from stratus.errors import BadRequest, StratusError
from stratus.gateway.authz import needs
from stratus.gateway.browser import COOKIE, session_cookie
from stratus.gateway.edge import Authenticator
from stratus.gateway.state import principal_of
from stratus.security.roles import Permission, Principal
from stratus.security.sessions import BOOTSTRAP

router = APIRouter(prefix="/api/session", tags=["session"])



class SessionView(BaseModel):
    """Who a session acts as, and until when (Unix seconds; None: not a browser session)."""

    actor: str
    namespace: str
    role: str
    expires_at: int | None


def _authenticator(request: Request) -> Authenticator:
    found: Authenticator = request.app.state.authenticator
    return found


def _view(principal: Principal, expires_at: int | None) -> SessionView:
    return SessionView(actor=principal.actor, namespace=principal.namespace,
                       role=principal.role.value, expires_at=expires_at)


def _set_cookie(response: Response, value: str, max_age: int) -> None:
    # Secure: browsers keep it over HTTPS, and over plain HTTP on localhost and 127.0.0.1 only.
    response.set_cookie(COOKIE, value, max_age=max_age, path="/", secure=True, httponly=True,
                        samesite="strict")


@router.post("", dependencies=[needs(Permission.AUTHENTICATED)],
             summary="Sign a browser in: an API key as the bearer token sets the session cookie")
async def sign_in(request: Request, response: Response) -> SessionView:
    principal = principal_of(request)
    authenticator = _authenticator(request)
    sessions = authenticator.sessions
    if sessions is None:
        raise StratusError("browser sessions are not available yet")
    now = time.time()
    if principal.key_id is not None:
        record = authenticator.keys.get(principal.key_id)
        not_after = record.expires_at.timestamp() if record and record.expires_at else None
        issued = sessions.issue(principal.key_id, now, not_after)
    elif principal.actor == BOOTSTRAP:
        issued = sessions.issue(BOOTSTRAP, now)
    else:
        raise BadRequest("a browser session is signed in with an API key or the admin key, "
                         "not a JWT")
    if issued is None:
        raise BadRequest("the API key expires too soon for a browser session")
    token, session = issued
    _set_cookie(response, token, max(1, int(session.expires_at - now)))
    return _view(principal, session.expires_at)


@router.get("", dependencies=[needs(Permission.AUTHENTICATED)],
            summary="Who this browser session (or bearer token) acts as")
async def whoami(request: Request) -> SessionView:
    principal = principal_of(request)
    cookie = session_cookie(request.scope)
    sessions = _authenticator(request).sessions
    expires_at = None
    if cookie is not None and sessions is not None:
        session = sessions.verify(cookie, time.time())
        expires_at = None if isinstance(session, str) else session.expires_at
    return _view(principal, expires_at)


@router.delete("", dependencies=[needs(Permission.PUBLIC)],
               summary="Sign the browser out: the session cookie is cleared")
async def sign_out(response: Response) -> dict[str, bool]:
    _set_cookie(response, "", 0)
    return {"signed_out": True}
