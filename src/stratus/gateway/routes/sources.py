"""External queue sources under ``/api/sources``: a Redis Stream read by a consumer group, one
async invocation per entry, acknowledged once it succeeded (or went dead to the DLQ)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from stratus.gateway.authz import needs
from stratus.gateway.routes.triggers_common import TriggersDep
from stratus.gateway.state import namespace_of
from stratus.security.roles import Permission
from stratus.spec import NAME_PATTERN

router = APIRouter(prefix="/api/sources", tags=["triggers"])


class SourceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["redis-stream"]
    url: str = Field(description="redis://host:port/db", max_length=500)
    stream: str = Field(min_length=1, max_length=200)
    group: str = Field("stratus", min_length=1, max_length=200)
    deployment: str = Field(pattern=NAME_PATTERN)
    batch: int = Field(10, ge=1, le=1000, description="Entries in flight at once")
    claim_idle_s: float = Field(60.0, gt=0, le=7 * 86400, description=(
        "A pending entry idle this long (its consumer died) is taken over"))


@router.post("", dependencies=[needs(Permission.WRITE)], status_code=201,
             summary="Create a source: consume a Redis Stream into a deployment")
async def create_source(body: SourceRequest, request: Request,
                        triggers: TriggersDep) -> JSONResponse:
    config = body.model_dump(include={"url", "stream", "group", "batch", "claim_idle_s"})
    view = await triggers.sources.create(namespace_of(request), body.name, body.kind, config,
                                         body.deployment)
    return JSONResponse(view, status_code=201)


@router.get("", dependencies=[needs(Permission.READ)], summary="The namespace's sources")
async def list_sources(request: Request, triggers: TriggersDep) -> dict[str, Any]:
    return {"sources": await triggers.sources.ls(namespace_of(request))}


@router.delete("/{name}", dependencies=[needs(Permission.WRITE)],
               summary="Delete a source (its consumer group stays in Redis)")
async def delete_source(name: str, request: Request, triggers: TriggersDep) -> dict[str, Any]:
    await triggers.sources.delete(namespace_of(request), name)
    return {"deleted": name}
