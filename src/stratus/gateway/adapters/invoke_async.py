"""The native invoke's asynchronous mode (``?mode=async`` or ``Prefer: respond-async``: a 202
once the invocation is committed) and its idempotent calls (``Idempotency-Key``), sync or async."""

from __future__ import annotations

import json
from typing import Any

from stratus.errors import BadRequest, Conflict, StratusError, Unavailable
from stratus.gateway.http import Call, Reply, error_body, revision_header, stratus_headers
from stratus.gateway.state import Components
from stratus.invocations.invoker import invoke_json
from stratus.invocations.service import AsyncService
from stratus.queue.records import AsyncInvocation, Status
from stratus.resilience.priority import PRIORITY_HEADER, request_queue_priority

IDEMPOTENCY_HEADER = "idempotency-key"
MAX_KEY_LENGTH = 255


def wants_async(call: Call) -> bool:
    """``?mode=async``, or RFC 7240's ``Prefer: respond-async`` when no mode is given."""
    mode = call.query_param("mode", "") if call.query else ""
    if mode:
        if mode not in ("sync", "async"):
            raise BadRequest(f"unsupported invoke mode {mode!r}; use 'sync' or 'async'")
        return mode == "async"
    prefer = call.headers.get("prefer")
    return prefer is not None and "respond-async" in prefer.lower()


def idempotency_key(call: Call) -> str | None:
    key = call.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise BadRequest(f"{IDEMPOTENCY_HEADER} must be 1 to {MAX_KEY_LENGTH} printable "
                         "characters")
    return key


def _priority(call: Call) -> int:
    """The queue's integer priority: the header's or ``?priority=``, within what the caller's
    key allows (``request_queue_priority``)."""
    text = call.headers.get(PRIORITY_HEADER) or (
        call.query_param("priority", "") if call.query else "")
    principal = call.principal
    return request_queue_priority(text or None, principal.priority, principal.max_priority)


def _service(parts: Components) -> AsyncService:
    if parts.async_service is None:
        raise Unavailable("asynchronous invocations are not running on this server")
    return parts.async_service


def _location(record: AsyncInvocation) -> list[tuple[bytes, bytes]]:
    return [(b"location", f"/api/invocations/{record.id}".encode()),
            (b"x-stratus-invocation-id", record.id.encode())]


async def enqueue(parts: Components, call: Call, body: bytes) -> Reply:
    """202 with the id, sent only after the queue committed the invocation. A repeat of an
    idempotency key answers with the first invocation: 202 while it runs, 200 with its
    outcome once it has one."""
    service = _service(parts)
    record, created = await service.submit(
        call.principal.namespace, call.params[0], body, priority=_priority(call),
        idempotency_key=idempotency_key(call), pinned=call.pinned_revision(),
        source={"kind": "api", "request_id": call.request_id})
    headers = [*_location(record), (b"preference-applied", b"respond-async")]
    if not created and record.terminal:
        return Reply(200, json.dumps(record.view()).encode(), headers)
    return Reply(202, json.dumps({"id": record.id, "status": record.status.value}).encode(),
                 headers)


async def idempotent_sync(parts: Components, call: Call, body: bytes, document: Any,
                          key: str) -> Reply:
    """A sync call that a repeat of its key answers from the record instead of running
    again; a repeat while the first still runs is a 409."""
    service = _service(parts)
    namespace, deployment = call.principal.namespace, call.params[0]
    priority = call.priority()  # a bad header is a 400 before anything is recorded
    # Held for the longest timeout a revision may have: a server that dies mid-call leaves a
    # record that another can take over only after that.
    record, created = await service.begin_sync(namespace, deployment, body, key, 3600.0)
    if not created:
        return _replay(record)
    try:
        answer, result = await invoke_json(parts.dispatcher, namespace, deployment, body,
                                           record.id, pinned=call.pinned_revision(),
                                           protocol="native", document=document,
                                           idempotent=True, priority=priority)
    except StratusError as exc:
        await service.end_sync(record, None, exc, None)
        raise
    await service.end_sync(record, answer, None, result.revision)
    headers = stratus_headers(result.revision, result.cold_start, result.attempts)
    return Reply(200, answer, [*headers, (b"x-stratus-invocation-id", record.id.encode())])


def _replay(record: AsyncInvocation) -> Reply:
    headers = [(b"x-stratus-invocation-id", record.id.encode()),
               (b"x-stratus-idempotent-replay", b"true")]
    if record.status is Status.SUCCEEDED and record.result is not None:
        if record.revision is not None:
            headers.append(revision_header(record.revision))
        return Reply(200, record.result, headers)
    if record.terminal and record.error is not None:
        error = record.error
        return Reply(int(error.get("status", 500)),
                     error_body(str(error.get("type", "internal_error")),
                                str(error.get("message", "")), record.id), headers)
    raise Conflict(f"the call with this {IDEMPOTENCY_HEADER} ({record.id}) is still running; "
                   "repeat it once it has finished")
