"""Experiment routes under ``/api/experiments``: define, list, report, record conversions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from stratus.experiments.book import (
    ConversionEvent,
    EventBatch,
    ExperimentBook,
    ExperimentRequest,
    report,
)
from stratus.gateway.audit import note_target
from stratus.gateway.authz import needs
from stratus.gateway.state import namespace_of
from stratus.security.roles import Permission

router = APIRouter(prefix="/api/experiments", tags=["experiments"])


def book_of(request: Request) -> ExperimentBook:
    found: ExperimentBook = request.app.state.experiments
    return found


Book = Annotated[ExperimentBook, Depends(book_of)]


@router.post("",
             dependencies=[needs(Permission.WRITE)],
             status_code=201, summary="Define an experiment over a deployment's revisions")
async def create_experiment(body: ExperimentRequest, request: Request, book: Book) -> dict[str, Any]:
    """With ``traffic`` or ``sticky``, the deployment's traffic split is set to match."""
    note_target(request, body.name)
    return report(await book.create(namespace_of(request), body))


@router.get("", dependencies=[needs(Permission.READ)], summary="List experiments")
async def list_experiments(request: Request, book: Book) -> dict[str, Any]:
    return {"experiments": [e.summary() for e in book.in_namespace(namespace_of(request))]}


@router.get("/{name}",
            dependencies=[needs(Permission.READ)], summary="Per-variant statistics and significance tests")
async def get_experiment(name: str, request: Request, book: Book) -> dict[str, Any]:
    return report(book.get(namespace_of(request), name))


@router.post("/{name}/events",
             dependencies=[needs(Permission.INVOKE)], status_code=202, summary="Record conversion events")
async def record_events(name: str, body: ConversionEvent | EventBatch, request: Request,
                        book: Book) -> dict[str, int]:
    """Replies with how many conversions the events add (their counts summed)."""
    events = body.events if isinstance(body, EventBatch) else [body]
    return {"recorded": await book.convert(namespace_of(request), name, events)}


@router.delete("/{name}",
               dependencies=[needs(Permission.WRITE)],
               summary="Delete an experiment; the traffic split stays as it is")
async def delete_experiment(name: str, request: Request, book: Book) -> dict[str, Any]:
    await book.delete(namespace_of(request), name)
    return {"deleted": name}
