"""``GET /api/traces/{trace_id}``: one trace's spans from the server's in-memory store."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request

from stratus.errors import BadRequest, NotFound
from stratus.gateway.authz import needs
from stratus.gateway.state import principal_of
from stratus.security.roles import Permission
from stratus.telemetry.tracing import Tracing

router = APIRouter(prefix="/api/traces", tags=["observability"])

_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
NAMESPACE = "stratus.namespace"  # on the gateway span that each request starts


def _request_of(span: dict[str, Any]) -> str | None:
    """The namespace of the request ``span`` starts, if it is a request's gateway span (a
    handler's own spans may carry any attribute)."""
    if span["process"] != "gateway":
        return None
    namespace: str | None = span["attributes"].get(NAMESPACE)
    return namespace


def own_spans(spans: list[dict[str, Any]], namespace: str) -> list[dict[str, Any]]:
    """The spans of ``namespace``'s requests: each of its gateway spans and all below them.

    The client picks the trace id, so one trace may hold several tenants' requests; a tenant's
    request hung under another's span (a traceparent naming it) is cut off there too.
    """
    children: dict[str | None, list[dict[str, Any]]] = {}
    for span in spans:
        children.setdefault(span["parent_span_id"], []).append(span)
    pending = [span for span in spans if _request_of(span) == namespace]
    kept: dict[str, dict[str, Any]] = {}
    while pending:
        span = pending.pop()
        if span["span_id"] in kept:
            continue
        kept[span["span_id"]] = span
        pending.extend(child for child in children.get(span["span_id"], ())
                       if _request_of(child) in (None, namespace))
    return sorted(kept.values(), key=lambda span: span["start"])


@router.get("/{trace_id}",
            dependencies=[needs(Permission.READ)],
            summary="The spans of one trace: gateway, queue, dispatch, replica, "
            "handler and the handler's own")
async def get_trace(trace_id: str, request: Request) -> dict[str, Any]:
    """Spans are sorted by start; times are Unix seconds. The global admin sees every span; a
    namespace's keys see the spans of the namespace's own requests, and 404 when it has none."""
    trace_id = trace_id.lower()
    if not _TRACE_ID.match(trace_id):
        raise BadRequest(f"trace id {trace_id!r} is not 32 hex digits")
    tracing: Tracing = request.app.state.tracing
    spans = tracing.store.get(int(trace_id, 16))
    principal = principal_of(request)
    if spans is not None and not principal.is_global:
        spans = own_spans(spans, principal.namespace) or None  # others' are as good as absent
    if spans is None:
        raise NotFound(f"trace {trace_id} not found: it is unknown, or older than the last "
                       f"{tracing.config.max_traces} traces the server keeps")
    return {"trace_id": trace_id, "spans": spans}
