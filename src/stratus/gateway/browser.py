"""The browser session's cookie at the edge: which requests it may authenticate (the docs and the
dashboard's own calls, never the data plane), and the CSRF check on those that change state.

CSRF: a request that carries the cookie and no bearer credentials, with a method other than
GET, HEAD or OPTIONS, must come from the server's own origin, as the browser says in
``Sec-Fetch-Site`` (Fetch Metadata); a browser too old to send it must send an ``Origin`` equal
to the server's. Anything else is a 403 ``csrf_failed``.
"""

from __future__ import annotations

import re
from http.cookies import CookieError, SimpleCookie

from starlette.types import Scope

from stratus.errors import Forbidden
from stratus.gateway.edge import scope_header

COOKIE = "stratus_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SESSION_PATH = "/api/session"
DOC_PAGES = frozenset({"/docs", "/redoc"})
# GET and HEAD only: the docs, and what the dashboard's pages read (ui/*.js).
ACCEPTED = re.compile(
    r"^/(?:docs|docs/oauth2-redirect|redoc|openapi\.json"
    r"|api/(?:session|dashboard|alerts|usage|workflows|executions"
    r"|executions/[^/]+|jobs|jobs/[^/]+|jobs/[^/]+/(?:logs|metrics)"
    r"|deployments/[^/]+|deployments/[^/]+/(?:series|invocations|traffic|logs)))$")


class CsrfFailed(Forbidden):
    type = "csrf_failed"


def session_cookie(scope: Scope) -> str | None:
    """The session cookie's value when the request has one and no bearer credentials: a
    bearer token always wins, and is never subject to the CSRF check."""
    if scope_header(scope, b"authorization") is not None:
        return None
    raw = scope_header(scope, b"cookie")
    if raw is None or COOKIE.encode() not in raw:
        return None
    try:
        jar = SimpleCookie(raw.decode("latin-1"))
    except CookieError:
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel is not None and morsel.value else None


def cookie_accepted(method: str, path: str) -> bool:
    """Whether the cookie authenticates this request (sign-out is public: see ``is_public``)."""
    return method in ("GET", "HEAD") and ACCEPTED.match(path) is not None


def csrf_problem(scope: Scope) -> CsrfFailed | None:
    """Why a state-changing request that carries the cookie is refused; None when it may go on."""
    if scope["method"] in SAFE_METHODS:
        return None
    site = scope_header(scope, b"sec-fetch-site")
    if site is not None:
        if site == b"same-origin":
            return None
        return CsrfFailed(f"a cross-site request ({site.decode(errors='replace')}) may not use the "
                          "browser session; send the API key as a bearer token")
    origin = scope_header(scope, b"origin")
    host = scope_header(scope, b"host")
    scheme = scope.get("scheme", "http")
    if origin is not None and host is not None and origin.decode(errors="replace") == \
            f"{scheme}://{host.decode(errors='replace')}":
        return None
    return CsrfFailed("a request that changes state with the browser session must come from this "
                      "server's pages (no Sec-Fetch-Site: same-origin or matching Origin)")


def signs_out(method: str, path: str) -> bool:
    """Sign-out needs no valid session: an expired or revoked cookie must still be cleared."""
    return method == "DELETE" and path == SESSION_PATH


def wants_page(scope: Scope) -> bool:
    """A browser navigating to a docs page (as opposed to a client asking for data)."""
    accept = scope_header(scope, b"accept") or b""
    return scope["method"] == "GET" and scope["path"] in DOC_PAGES and b"text/html" in accept
