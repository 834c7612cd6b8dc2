"""Edge middleware of the control-plane app: request id and authentication on every route.

Plain ASGI rather than ``BaseHTTPMiddleware``, which would buffer and add a task per request.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stratus.errors import StratusError
from stratus.gateway.edge import Authenticator, assign_request_id, is_public
from stratus.gateway.guard import Guard
from stratus.gateway.http import error_reply, send_reply


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
        if not is_public(scope["path"]):
            principal = self.authenticator.authenticate(scope)
            if isinstance(principal, StratusError):
                reply = error_reply(principal, request_id.decode(), None, {}, scope["path"])
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
