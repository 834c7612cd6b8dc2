"""The native invoke adapter: JSON in, JSON out (``POST /api/deployments/{name}/invoke``)."""

from __future__ import annotations

import json

from stratus.dispatch.dispatcher import Invocation, InvocationResult
from stratus.errors import BadRequest, InvalidJSON
from stratus.gateway.http import Call, Reply
from stratus.gateway.state import Components
from stratus.runtime import wire


def stratus_headers(result: InvocationResult) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-stratus-revision", str(result.revision).encode()),
        (b"x-stratus-cold-start", b"true" if result.cold_start else b"false"),
    ]


async def native_invoke(parts: Components, call: Call) -> Reply:
    mode = call.query_param("mode", "sync") if call.query else "sync"
    if mode != "sync":
        raise BadRequest(f"unsupported invoke mode {mode!r}; this server supports 'sync'")
    body = call.body
    if not body.strip():
        body = b"{}"  # as Lambda's Invoke: no payload is an empty event
    try:
        json.loads(body)
    except ValueError as exc:
        raise InvalidJSON(f"request body is not valid JSON: {exc}") from None
    result = await parts.dispatcher.invoke(
        Invocation(
            namespace=call.principal.namespace,
            deployment=call.params[0],
            kind=wire.KIND_JSON,
            payload=body,
            request_id=call.request_id,
        )
    )
    headers = stratus_headers(result)
    if result.kind == wire.KIND_HTTP:
        status, handler_headers, data = result.payload
        content_type = handler_headers.pop("content-type", "application/json").encode()
        headers.extend((k.encode(), v.encode()) for k, v in handler_headers.items()
                       if k not in ("content-length", "x-request-id"))
        return Reply(status, data, headers, content_type)
    if result.kind != wire.KIND_JSON:
        raise BadRequest("the handler answered with tensors; call it through /v2/models/{name}/infer")
    return Reply(200, result.payload, headers)
