"""The data plane: the ASGI entry point. Invoke and infer requests are served here directly,
with no framework routing or dependency injection on their path; every other request goes
on to the control-plane app (FastAPI).

Each data-plane request: request id -> authentication -> bounded body read -> adapter
(protocol -> Invocation -> dispatcher -> protocol) -> one response.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from stratus.errors import MethodNotAllowed, StratusError, storage_full
from stratus.gateway.adapters.invoke import native_invoke
from stratus.gateway.adapters.openai import chat_completions, completions, embeddings
from stratus.gateway.adapters.v2 import v2_infer
from stratus.gateway.authz import DATA_PLANE, denial
from stratus.gateway.edge import Authenticator, assign_request_id
from stratus.gateway.guard import Guard
from stratus.gateway.http import Call, Reply, error_reply, header_map, read_body, send_reply
from stratus.gateway.openapi_errors import DESCRIPTIONS
from stratus.gateway.state import Components
from stratus.gateway.streaming import StreamReply, send_stream
from stratus.gateway.takeover import Takeover
from stratus.security.quotas import UNLIMITED
from stratus.telemetry import tracing

log = logging.getLogger("stratus.gateway")

Adapter = Callable[[Components, Call], Awaitable[Reply | StreamReply]]

# (suffix checked first, pattern, adapter): a suffix test keeps control-plane paths cheap.
ROUTES: tuple[tuple[str, re.Pattern[str], Adapter], ...] = (
    ("/invoke", re.compile(r"^/api/deployments/([^/]+)/invoke$"), native_invoke),
    ("/infer", re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$"), v2_infer),
    ("/chat/completions", re.compile(r"^/v1/chat/completions$"), chat_completions),
    ("/completions", re.compile(r"^/v1/completions$"), completions),
    ("/embeddings", re.compile(r"^/v1/embeddings$"), embeddings),
)


class DataPlane:
    def __init__(self, control_plane: ASGIApp, authenticator: Authenticator,
                 guard: Guard | None = None) -> None:
        self.control_plane = control_plane
        self.authenticator = authenticator
        self.guard = guard or Guard(UNLIMITED, max_body_bytes=0, max_json_depth=0)
        self.components: Components | None = None  # set once the control plane has started
        self.takeover: Takeover | None = None  # set by SIGUSR2: the stop hands everything on
        self.on_denied: Callable[[Scope, int], None] | None = None  # the audit log's hook

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.components is not None:
            path: str = scope["path"]
            for suffix, pattern, adapter in ROUTES:
                if path.endswith(suffix):
                    match = pattern.match(path)
                    if match is None:
                        continue
                    if scope["method"] == "POST":
                        await self._serve(scope, receive, send, adapter, match.groups(""))
                    else:
                        await _refuse_method(scope, send)
                    return
        await self.control_plane(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, adapter: Adapter,
                     params: tuple[str, ...]) -> None:
        parts = self.components
        assert parts is not None
        request_id = assign_request_id(scope)
        headers = header_map(scope["headers"])
        principal = self.authenticator.authenticate(scope)
        if not isinstance(principal, StratusError) and not principal.allows(DATA_PLANE):
            principal = denial(principal, DATA_PLANE)
        span = tracing.start_request_span(
            headers, scope["path"], request_id.decode(),
            None if isinstance(principal, StratusError) else principal.namespace)
        token = tracing.enter(span)
        body: bytes | None = None
        try:
            principal = self.guard.enter(principal)  # rate limits, concurrency cap: 429
            reply: Reply | StreamReply
            if isinstance(principal, StratusError):
                reply = error_reply(principal, request_id.decode(), None, headers, scope["path"])
            else:
                try:
                    body = await read_body(receive, headers, parts.settings.max_body_bytes)
                    call = Call(principal, request_id.decode(), params, headers,
                                scope["query_string"].decode("latin-1"), body)
                    reply = await adapter(parts, call)
                except StratusError as exc:
                    reply = error_reply(exc, request_id.decode(), principal, headers, scope["path"])
                except Exception as exc:
                    internal: StratusError | None = storage_full(exc)  # an async enqueue
                    if internal is None:
                        log.exception("unhandled error on %s", scope["path"])
                        internal = StratusError("internal server error")
                    reply = error_reply(internal, request_id.decode(), principal, headers,
                                        scope["path"])
            if parts.payloads is not None and body is not None:
                parts.payloads.record(scope, body, reply.status, reply.body)
            if reply.status in (401, 403) and self.on_denied is not None:
                self.on_denied(scope, reply.status)
            if span is not None and span.is_recording():  # a trace GET /api/traces/ has
                reply.headers.append((b"x-trace-id", tracing.trace_id_of(span)))
                tracing.set_http_status(span, reply.status)
            if isinstance(reply, StreamReply):
                await send_stream(send, receive, reply, request_id)
            else:
                await send_reply(send, reply, request_id)
        finally:
            self.guard.leave(principal)
            tracing.leave(token, span)


async def _refuse_method(scope: Scope, send: Send) -> None:
    """Every data-plane route is POST only: another method is a 405 naming it in ``Allow``
    (the control API's routes answer the same way, through ``error_reply``)."""
    request_id = assign_request_id(scope)
    error = MethodNotAllowed(f"{scope['method']} is not allowed on {scope['path']}: use POST",
                             allow=("POST",))
    reply = error_reply(error, request_id.decode(), None, header_map(scope["headers"]),
                        scope["path"])
    await send_reply(send, reply, request_id)


def openapi_paths() -> dict[str, Any]:
    """OpenAPI entries for the data-plane routes, which the framework never sees. Their error
    bodies are filled in with the rest (``openapi_errors.document_errors``)."""
    responses = {
        "200": {"description": "The handler's answer",
                "headers": {"X-Stratus-Revision": {"schema": {"type": "integer"}},
                            "X-Stratus-Cold-Start": {"schema": {"type": "boolean"}},
                            "X-Request-Id": {"schema": {"type": "string"}},
                            "X-Trace-Id": {"schema": {"type": "string"}}}},
        **{code: {"description": DESCRIPTIONS[code]}
           for code in ("400", "401", "403", "404", "413", "429", "500", "502", "503", "504")},
    }
    body = {"required": True, "content": {"application/json": {"schema": {}}}}

    def operation(summary: str, parameters: list[str]) -> dict[str, Any]:
        return {"post": {"summary": summary, "requestBody": body, "responses": responses,
                         "parameters": [{"name": p, "in": "path", "required": True,
                                         "schema": {"type": "string"}} for p in parameters]}}

    return {
        "/api/deployments/{name}/invoke": operation(
            "Invoke a deployment: the JSON body goes to the handler, its JSON comes back",
            ["name"]),
        "/v2/models/{name}/infer": operation("Open Inference Protocol v2 inference", ["name"]),
        "/v2/models/{name}/versions/{version}/infer": operation(
            "Open Inference Protocol v2 inference on one version", ["name", "version"]),
        "/v1/completions": operation(
            "OpenAI-compatible completions (server-sent events with stream: true)", []),
        "/v1/chat/completions": operation(
            "OpenAI-compatible chat completions (server-sent events with stream: true)", []),
        "/v1/embeddings": operation("OpenAI-compatible embeddings", []),
    }
