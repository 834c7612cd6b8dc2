"""The native invoke adapter: JSON in, JSON out (``POST /api/deployments/{name}/invoke``);
a handler that yields streams NDJSON to a client that accepts it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from stratus.dispatch.dispatcher import Choice, Invocation, InvocationResult
from stratus.errors import BadRequest, InvalidJSON, StratusError
from stratus.gateway.adapters.invoke_async import (
    enqueue,
    idempotency_key,
    idempotent_sync,
    wants_async,
)
from stratus.gateway.http import Call, Reply, error_body, stratus_headers
from stratus.gateway.state import Components
from stratus.gateway.streaming import InvocationStream, StreamReply
from stratus.runtime import wire
from stratus.security.jsondepth import check_depth


async def native_invoke(parts: Components, call: Call) -> Reply | StreamReply:
    body = call.body
    if not body.strip():
        body = b"{}"  # as Lambda's Invoke: no payload is an empty event
    check_depth(body, parts.settings.max_json_depth)
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise InvalidJSON(f"request body is not valid JSON: {exc}") from None
    if (call.query or "prefer" in call.headers) and wants_async(call):
        return await enqueue(parts, call, body)
    if "idempotency-key" in call.headers:
        key = idempotency_key(call)
        assert key is not None
        return await idempotent_sync(parts, call, body, document, key)
    # The parsed document, so that a sticky JSON field is read without parsing the body again.
    choice = parts.dispatcher.choose(call.principal.namespace, call.params[0],
                                     call.pinned_revision(), call.headers, document)
    # A handler that streams, called without asking for a stream, answers with the list
    # of its items once it is done.
    items: list[bytes] = []
    invocation = Invocation(
        kind=wire.KIND_JSON,
        payload=body,
        request_id=call.request_id,
        on_chunk=lambda kind, payload: items.append(payload),
        priority=call.priority(),
        deadline=call.deadline(),
    )
    accept = call.headers.get("accept", "")
    if "application/x-ndjson" in accept or "text/event-stream" in accept:
        return await _invoke_streaming(parts, choice, invocation)  # takes the items itself
    result = await parts.dispatcher.run(choice, invocation)
    if items:
        return Reply(200, b"[" + b",".join(items) + b"]",
                     stratus_headers(result.revision, result.cold_start, result.attempts))
    return _plain_reply(result)


def _plain_reply(result: InvocationResult) -> Reply:
    headers = stratus_headers(result.revision, result.cold_start, result.attempts)
    if result.kind == wire.KIND_HTTP:
        status, handler_headers, data = result.payload
        content_type = handler_headers.pop("content-type", "application/json").encode()
        headers.extend((k.encode(), v.encode()) for k, v in handler_headers.items()
                       if k not in ("content-length", "x-request-id"))
        return Reply(status, data, headers, content_type)
    if result.kind != wire.KIND_JSON:
        raise BadRequest("the handler answered with tensors; call it through /v2/models/{name}/infer")
    return Reply(200, result.payload, headers)


async def _invoke_streaming(parts: Components, choice: Choice,
                            invocation: Invocation) -> Reply | StreamReply:
    """Newline-delimited JSON, one line per item as the handler yields it."""
    stream = InvocationStream(parts.dispatcher, choice, invocation)
    first = await stream.next_item()
    if first is None:
        return _plain_reply(await stream.result())

    async def lines() -> AsyncIterator[bytes]:
        try:
            yield first[1] + b"\n"
            while (item := await stream.next_item()) is not None:
                yield item[1] + b"\n"
            await stream.result()
        except StratusError as exc:
            yield error_body(exc.type, exc.message, invocation.request_id) + b"\n"
        finally:
            await stream.close()

    return StreamReply(200, lines(), stream.headers(), content_type=b"application/x-ndjson")
