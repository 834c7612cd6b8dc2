"""Calling a deployment from inside the server (the async worker, workflow steps): JSON bytes in,
the handler's JSON bytes out, through the same dispatcher, routes, autoscaling, tracing and
metering as a call from a client."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from stratus.dispatch.dispatcher import Dispatcher, Invocation, InvocationResult
from stratus.errors import BadRequest, InvalidJSON
from stratus.resilience.priority import Priority
from stratus.runtime import wire

ProgressSink = Callable[[float, str | None], None]


async def invoke_json(dispatcher: Dispatcher, namespace: str, deployment: str, body: bytes,
                      request_id: str, *, pinned: int | None = None,
                      on_progress: ProgressSink | None = None, protocol: str = "async",
                      document: Any = None, idempotent: bool = False,
                      priority: Priority = Priority.NORMAL,
                      ) -> tuple[bytes, InvocationResult]:
    """The handler's answer as JSON bytes (a streamed answer as the list of its items), and the
    result it came in. Raises the StratusError of a failure, as a sync call would answer it.
    ``document``: the body already parsed, by a caller that had to (for a sticky field).
    ``idempotent``: the caller gave an idempotency key, so a lost request may be resent.
    ``priority``: under load shedding, a client's call's, or an async invocation's as it was
    queued; the server's own calls (workflow steps) are normal."""
    if document is None:
        try:
            document = json.loads(body) if body.strip() else {}
        except ValueError as exc:
            raise InvalidJSON(f"the payload is not valid JSON: {exc}") from None
    choice = dispatcher.choose(namespace, deployment, pinned, None, document)
    items: list[bytes] = []

    def on_chunk(kind: int, payload: Any) -> None:
        if kind != wire.KIND_PROGRESS:
            items.append(payload)
        elif on_progress is not None:
            fraction, message = payload
            on_progress(float(fraction), message)

    invocation = Invocation(kind=wire.KIND_JSON, payload=body or b"{}", request_id=request_id,
                            on_chunk=on_chunk, protocol=protocol, on_progress=on_progress,
                            idempotent=idempotent, priority=priority)
    result = await dispatcher.run(choice, invocation)
    if items:
        return b"[" + b",".join(items) + b"]", result
    if result.kind == wire.KIND_HTTP:
        status, _headers, data = result.payload
        if status >= 400:
            raise BadRequest(f"the handler answered HTTP {status}")
        return bytes(data), result
    if result.kind != wire.KIND_JSON:
        raise BadRequest("the handler answered with tensors, which an async invocation cannot "
                         "hold; call it through /v2/models/{name}/infer")
    return bytes(result.payload), result
