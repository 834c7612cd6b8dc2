"""``GET /api/audit``: audit records by time, actor and action; ``GET /api/audit/verify``: whether
the hash chain is intact and its tail matches the checkpoints, and where not."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Query, Request

from stratus.errors import BadRequest, Unavailable
from stratus.gateway.authz import denial, needs
from stratus.gateway.state import principal_of
from stratus.observe.logs import parse_since
from stratus.security.audit import AuditRecord, Verdict, verify
from stratus.security.audit_log import AuditLog
from stratus.security.roles import Permission
from stratus.security.tail_check import TailCheck
from stratus.store.audit import AuditQuery, AuditStore

router = APIRouter(prefix="/api/audit", tags=["security"])
TIME_HELP = "a duration ago (90s, 10m, 2h, 7d) or an ISO 8601 time"


def _running(request: Request) -> tuple[AuditLog, AuditStore]:
    audit: AuditLog | None = getattr(request.app.state, "audit", None)
    store: AuditStore | None = getattr(request.app.state, "audit_store", None)
    if audit is None or store is None:
        raise Unavailable("the audit log is not running yet")
    return audit, store


def _time(text: str | None, name: str) -> float | None:
    if not text:
        return None
    try:
        return parse_since(text)
    except ValueError as exc:
        raise BadRequest(str(exc).replace("since", name, 1)) from None


def record_view(record: AuditRecord) -> dict[str, Any]:
    event = record.event
    return {"id": record.id, "at": datetime.fromtimestamp(event.at, UTC).isoformat(),
            "namespace": event.namespace, "actor": event.actor, "action": event.action,
            "target": event.target, "source": event.source, "result": event.result,
            "status": event.status, "request_id": event.request_id,
            "prev_hash": record.prev_hash, "hash": record.hash}


@router.get("", dependencies=[needs(Permission.ADMIN)], summary="Audit records, newest first")
async def audit_records(
    request: Request,
    since: str | None = Query(None, description=TIME_HELP),
    until: str | None = Query(None, description=TIME_HELP),
    actor: str | None = Query(None, description="exactly this actor: bootstrap, key:<id>, jwt:<sub>"),
    action: str | None = Query(None, description="this action or any below it: deployments"),
    limit: int = Query(100, ge=1, le=10_000),
) -> dict[str, Any]:
    """A namespace's admins see its records. The global admin sees every namespace's (records
    of requests that never authenticated have none), or one namespace's with
    ``X-Stratus-Namespace``."""
    principal = principal_of(request)
    if not principal.allows(Permission.ADMIN):
        raise denial(principal, Permission.ADMIN)
    everywhere = principal.is_global and "x-stratus-namespace" not in request.headers
    query = AuditQuery(None if everywhere else principal.namespace, _time(since, "since"),
                       _time(until, "until"), actor or None, action or None, limit)
    audit, store = _running(request)
    await audit.flush()  # what this caller just did is in the answer
    found = await asyncio.to_thread(store.query, query)
    return {"namespace": query.namespace, "records": [record_view(record) for record in found]}


@router.get("/verify", dependencies=[needs(Permission.GLOBAL)],
            summary="Check the audit log's hash chain and its checkpoints (global admin)")
async def audit_verify(request: Request) -> dict[str, Any]:
    """Reads every record in order. ``first_bad`` is the id where the chain breaks: an edited
    record, or the one after a deleted one. ``findings`` are what the MAC'd checkpoints show
    and the chain cannot: a tail cut off or rewritten, checkpoints missing or forged."""
    principal = principal_of(request)
    if not principal.allows(Permission.GLOBAL):
        raise denial(principal, Permission.GLOBAL)
    audit, store = _running(request)
    await audit.flush()
    checkpointer = audit.checkpoints
    check: TailCheck | None = None
    if checkpointer is None:
        verdict: Verdict = await asyncio.to_thread(lambda: verify(store.scan()))
    else:
        verdict, check = await asyncio.to_thread(checkpointer.verify, store.scan())
    bad = None
    if verdict.first_bad is not None:
        bad = await asyncio.to_thread(store.get, verdict.first_bad)
    findings = check.findings if check is not None else []
    return {
        "ok": verdict.ok and not findings, "records": verdict.records,
        "first_bad": verdict.first_bad, "reason": verdict.reason,
        "record": record_view(bad) if bad is not None else None,
        "head": None if verdict.head_id is None else {"id": verdict.head_id,
                                                       "hash": verdict.head_hash},
        "checkpoints": None if check is None or checkpointer is None else {
            "file": str(checkpointer.file.path), "lines": check.count,
            "last": _checkpoint_view(check), "writer": checkpointer.file.writer},
        "findings": [{"kind": str(f.kind), "reason": f.reason, "checkpoint": f.checkpoint,
                      "record": f.record} for f in findings],
        "dropped": audit.dropped,
    }


def _checkpoint_view(check: TailCheck) -> dict[str, Any] | None:
    if not check.valid:
        return None
    last = check.valid[-1]
    return {"seq": last.seq, "id": last.id, "hash": last.hash,
            "at": datetime.fromtimestamp(last.at, UTC).isoformat()}
