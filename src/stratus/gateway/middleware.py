"""Edge middleware of the control-plane app: request id and authentication on every route, by
bearer credentials or, where ``gateway.browser`` accepts it, the browser session's cookie.

Plain ASGI rather than ``BaseHTTPMiddleware``, which would buffer and add a task per request.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stratus.errors import StratusError, Unauthorized
from stratus.gateway.browser import (
    cookie_accepted,
    csrf_problem,
    session_cookie,
    signs_out,
    wants_page,
)
from stratus.gateway.edge import Authenticator, assign_request_id, is_public
from stratus.gateway.guard import Guard
from stratus.gateway.http import Reply, error_reply, send_reply
from stratus.security.roles import Principal

SIGN_IN_PAGE = "/ui/"


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, authenticator: Authenticator, guard: Guard | None = None) -> None:
        self.app = app
        self.authenticator = authenticator
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = assign_request_id(scope)
        path, method = scope["path"], scope["method"]
        cookie = session_cookie(scope)
        refused = csrf_problem(scope) if cookie is not None else None
        if refused is not None:
            await send_reply(send, error_reply(refused, request_id.decode(), None, {}, path),
                             request_id)
            return
        if not (is_public(path) or signs_out(method, path)):
            principal = self._principal(scope, cookie)
            if isinstance(principal, StratusError):
                reply = (_to_sign_in(path) if wants_page(scope)
                         else error_reply(principal, request_id.decode(), None, {}, path))
                await send_reply(send, reply, request_id)
                return
            if self.guard is not None:  # rate limits; JSON bodies read, bounded and checked
                admitted = await self.guard.admit_control(scope, receive, principal)
                if isinstance(admitted, StratusError):
                    reply = error_reply(admitted, request_id.decode(), principal, {}, scope["path"])
                    await send_reply(send, reply, request_id)
                    return
                receive = admitted

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
            await send(message)

        await self.app(scope, receive, send_with_id)

    def _principal(self, scope: Scope, cookie: str | None) -> Principal | StratusError:
        if cookie is None:
            return self.authenticator.authenticate(scope)
        if not cookie_accepted(scope["method"], scope["path"]):
            return Unauthorized("missing bearer credentials (the browser session is accepted "
                                "only by the docs and the dashboard's own calls)")
        return self.authenticator.authenticate_session(scope, cookie)


def _to_sign_in(path: str) -> Reply:
    """A browser without a session, opening the docs: to the dashboard's sign-in, and back."""
    return Reply(303, b"", [(b"location", f"{SIGN_IN_PAGE}?next={path}".encode())],
                 content_type=b"text/plain")
