"""``GET /api/traces/{trace_id}``: one trace's spans from the server's in-memory store."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request

from stratus.errors import BadRequest, NotFound
from stratus.gateway.state import principal_of
from stratus.observe.tracing import Tracing

router = APIRouter(prefix="/api/traces", tags=["observability"])

_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


@router.get("/{trace_id}", summary="The spans of one trace: gateway, queue, dispatch, replica, "
            "handler and the handler's own")
async def get_trace(trace_id: str, request: Request) -> dict[str, Any]:
    """Spans are sorted by start; times are Unix seconds. A trace is visible to admins and to
    keys of the namespace whose request made it."""
    trace_id = trace_id.lower()
    if not _TRACE_ID.match(trace_id):
        raise BadRequest(f"trace id {trace_id!r} is not 32 hex digits")
    tracing: Tracing = request.app.state.tracing
    spans = tracing.store.get(int(trace_id, 16))
    principal = principal_of(request)
    if spans is not None and not principal.is_admin and not any(
            span["attributes"].get("stratus.namespace") == principal.namespace for span in spans):
        spans = None  # another tenant's trace is as good as absent
    if spans is None:
        raise NotFound(f"trace {trace_id} not found: it is unknown, or older than the last "
                       f"{tracing.config.max_traces} traces the server keeps")
    return {"trace_id": trace_id, "spans": spans}
