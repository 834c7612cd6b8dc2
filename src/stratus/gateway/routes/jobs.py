"""Training and evaluation jobs under ``/api/jobs``: submit, list, show (or replay), events,
metrics, logs and cancel. A job of another namespace is a 404, as if it did not exist."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from stratus.errors import BadRequest, NotFound, Unavailable
from stratus.gateway.audit import note_target
from stratus.gateway.authz import needs
from stratus.gateway.routes.blobs import share_referenced
from stratus.gateway.state import Parts, namespace_of, principal_of
from stratus.jobs.request import JobRequest
from stratus.jobs.service import JobService
from stratus.observe.logread import follow as follow_log
from stratus.observe.logread import read_tail
from stratus.observe.logs import parse_since
from stratus.security.roles import Permission

router = APIRouter(prefix="/api/jobs", tags=["jobs"])
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


def _service(parts: Parts) -> JobService:
    if parts.jobs is None:
        raise Unavailable("jobs are not running yet")
    return parts.jobs


def _moment(value: float | None, name: str) -> float | None:
    if value is not None and not math.isfinite(value):
        raise BadRequest(f"{name} must be a Unix time in seconds")
    return value


@router.post("", dependencies=[needs(Permission.WRITE)], status_code=201,
             responses={201: {"description": "Submitted: queued, or running already"}},
             summary="Submit a job")
async def submit_job(body: JobRequest, request: Request, parts: Parts) -> JSONResponse:
    """Runs ``train(ctx)`` from an uploaded code bundle in a worker forked from a warm zygote.
    The code is imported now: an import error or a bad entrypoint is a 400; an unknown
    dataset a 404."""
    service = _service(parts)
    await share_referenced(request, parts, [body.code.bundle])
    view = await service.submit(namespace_of(request), body, principal_of(request).actor)
    note_target(request, view["id"])
    return JSONResponse(view, status_code=201)


class EvaluationRequest(BaseModel):
    """Body of ``POST /api/jobs/evaluate``."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=3, max_length=200, description="name@version or name@stage")
    dataset: str = Field(min_length=1, max_length=200, description="name@version")
    split: str = Field(default="test", min_length=1, max_length=63)


@router.post("/evaluate", dependencies=[needs(Permission.WRITE)], status_code=201,
             summary="Evaluate a model version on a dataset's split")
async def evaluate_model(body: EvaluationRequest, request: Request,
                         parts: Parts) -> JSONResponse:
    """A job that scores the version (classification or regression metrics) and records them
    on it. An unknown model, dataset or split is a 404."""
    if parts.promotion is None:
        raise Unavailable("jobs are not running yet")
    view = await parts.promotion.evaluate(namespace_of(request), body.model, body.dataset,
                                          body.split, principal_of(request).actor)
    note_target(request, view["id"])
    return JSONResponse(view, status_code=201)


@router.get("", dependencies=[needs(Permission.READ)], summary="List jobs, newest first")
async def list_jobs(
    request: Request, parts: Parts,
    experiment: str | None = Query(None, max_length=63, description="only this experiment's runs"),
    status: str | None = Query(None, description=", ".join(STATUSES)),
    limit: int = Query(100, ge=1, le=1000),
) -> dict[str, Any]:
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
    service = _service(parts)
    states = await asyncio.to_thread(service.log.jobs, namespace_of(request),
                                     experiment=experiment, status=status, limit=limit)
    return {"jobs": [service.describe(state) for state in states]}


@router.get("/{job_id}", dependencies=[needs(Permission.READ)], summary="A job's state")
async def get_job(
    job_id: str, request: Request, parts: Parts,
    at: float | None = Query(None, description="replay: the state at this Unix time"),
) -> dict[str, Any]:
    service = _service(parts)
    namespace = namespace_of(request)
    if at is None:
        return await service.view(namespace, job_id)
    await service.state(namespace, job_id)  # 404 before replaying
    state = await asyncio.to_thread(service.log.state_at, namespace, job_id,
                                    _moment(at, "at") or 0.0)
    if state is None:
        raise NotFound(f"job {job_id!r} had not been submitted at {at}")
    return state.view()


@router.get("/{job_id}/events", dependencies=[needs(Permission.READ)],
            summary="A job's events, in order")
async def job_events(
    job_id: str, request: Request, parts: Parts,
    until: float | None = Query(None, description="only events appended at or before this time"),
    after: int = Query(0, ge=0, description="only events after this sequence number"),
) -> dict[str, Any]:
    service = _service(parts)
    namespace = namespace_of(request)
    state = await service.state(namespace, job_id)
    events = await asyncio.to_thread(service.log.events, namespace, job_id,
                                     _moment(until, "until"), after)
    return {"job_id": job_id, "status": state.status,
            "events": [event.view() for event in events]}


@router.get("/{job_id}/metrics", dependencies=[needs(Permission.READ)],
            summary="A job's final metrics and metric curves")
async def job_metrics(job_id: str, request: Request, parts: Parts) -> dict[str, Any]:
    service = _service(parts)
    namespace = namespace_of(request)
    state = await service.state(namespace, job_id)
    curves = await asyncio.to_thread(service.log.curves, namespace, job_id)
    return {"job_id": job_id, "status": state.status, "metrics": state.metrics,
            "curves": {name: [[step, value] for step, value in points]
                       for name, points in curves.items()}}


@router.get("/{job_id}/logs", dependencies=[needs(Permission.READ)],
            summary="A job's log (JSON lines: its stdout, stderr and ctx.logger)",
            response_class=PlainTextResponse)
async def job_logs(
    job_id: str, request: Request, parts: Parts,
    tail: int = Query(1000, ge=0, le=100_000),
    since: str | None = Query(None, description="a duration (10m, 2h) or an ISO time"),
    follow: bool = Query(False, description="keep sending new lines until the job ends"),
) -> Response:
    service = _service(parts)
    namespace = namespace_of(request)
    await service.state(namespace, job_id)
    path = service.log_path(namespace, job_id)
    try:
        start = parse_since(since) if since else None
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    text, offset = await asyncio.to_thread(read_tail, path, tail, start)
    if not follow:
        return PlainTextResponse(text)
    going = lambda: parts.ready and service.active(job_id)  # noqa: E731
    return StreamingResponse(follow_log(path, offset, text, going, final=True),
                             media_type="text/plain; charset=utf-8")


@router.delete("/{job_id}", dependencies=[needs(Permission.WRITE)], summary="Cancel a job")
async def cancel_job(job_id: str, request: Request, parts: Parts) -> dict[str, Any]:
    """Records JobCancelled and kills the job's processes (its whole process group); a job
    that already ended is a 409."""
    return await _service(parts).cancel(namespace_of(request), job_id,
                                        principal_of(request).actor)
