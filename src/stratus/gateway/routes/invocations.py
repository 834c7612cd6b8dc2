"""Asynchronous invocations under ``/api/invocations`` (status, list, cancel) and each
deployment's dead-letter queue under ``/api/deployments/{name}/dlq`` (list, redrive)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from stratus.errors import BadRequest, Unavailable
from stratus.gateway.authz import needs
from stratus.gateway.state import Parts, namespace_of
from stratus.invocations.service import AsyncService
from stratus.queue.records import Page, Status
from stratus.security.roles import Permission

router = APIRouter(prefix="/api", tags=["invocations"])
MAX_PAGE = 500


def _service(parts: Parts) -> AsyncService:
    if parts.async_service is None:
        raise Unavailable("asynchronous invocations are not running on this server")
    return parts.async_service


def _status(text: str | None) -> Status | None:
    if text is None or text == "":
        return None
    try:
        return Status(text)
    except ValueError:
        known = ", ".join(status.value for status in Status)
        raise BadRequest(f"unknown status {text!r}; one of {known}") from None


def _page_view(page: Page) -> dict[str, Any]:
    return {"invocations": [record.view() for record in page.items],
            "next_cursor": page.next_cursor}


Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]


MAX_WAIT_S = 60.0


@router.get("/invocations/{invocation_id}", dependencies=[needs(Permission.INVOKE)],
            summary="An asynchronous invocation: status, attempts, progress, result or error")
async def get_invocation(invocation_id: str, request: Request, parts: Parts,
                         wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S)] = 0.0
                         ) -> dict[str, Any]:
    """With ``wait=S``, a long poll: the answer comes once the invocation has ended, or after
    S seconds as it stands then, instead of the client polling in a loop."""
    service = _service(parts)
    if wait > 0:
        record = await service.wait(namespace_of(request), invocation_id, wait)
    else:
        record = await service.get(namespace_of(request), invocation_id)
    return record.view()


@router.get("/invocations", dependencies=[needs(Permission.READ)],
            summary="The namespace's asynchronous invocations, newest first")
async def list_invocations(request: Request, parts: Parts, deployment: str | None = None,
                           status: str | None = None, limit: Limit = 50,
                           cursor: str | None = None) -> dict[str, Any]:
    page = await _service(parts).page(namespace_of(request), deployment=deployment,
                                      status=_status(status), limit=limit, cursor=cursor)
    return _page_view(page)


@router.delete("/invocations/{invocation_id}", dependencies=[needs(Permission.INVOKE)],
               summary="Cancel a queued or running invocation")
async def cancel_invocation(invocation_id: str, request: Request,
                            parts: Parts) -> dict[str, Any]:
    """A running one is sent a CANCEL; an invocation already finished is returned as is."""
    record = await _service(parts).cancel(namespace_of(request), invocation_id)
    return record.view()


@router.get("/deployments/{name}/dlq", dependencies=[needs(Permission.READ)],
            summary="The deployment's dead-letter queue")
async def list_dead_letters(name: str, request: Request, parts: Parts, limit: Limit = 50,
                            cursor: str | None = None) -> dict[str, Any]:
    namespace = namespace_of(request)
    service = _service(parts)
    service.settings_of(namespace, name)  # 404 for an unknown deployment
    page = await service.page(namespace, deployment=name, status=Status.DEAD, limit=limit,
                              cursor=cursor)
    return _page_view(page)


class Redrive(BaseModel):
    """Body of ``POST /api/deployments/{name}/dlq/redrive``: the ids, or none for all."""

    model_config = ConfigDict(extra="forbid")

    ids: list[str] | None = Field(default=None, max_length=10_000)


@router.post("/deployments/{name}/dlq/redrive", dependencies=[needs(Permission.WRITE)],
             summary="Queue dead-lettered invocations again, with their attempts reset")
async def redrive(name: str, body: Redrive, request: Request, parts: Parts) -> dict[str, Any]:
    moved = await _service(parts).redrive(namespace_of(request), name, body.ids)
    return {"redriven": moved}
