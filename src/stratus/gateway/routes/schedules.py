"""Cron schedules under ``/api/schedules``: create, list, show, delete. Each tick of a schedule
is an async invocation of its deployment with its payload, or a training job."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from stratus.errors import BadRequest
from stratus.gateway.authz import needs
from stratus.gateway.routes.blobs import share_referenced
from stratus.gateway.routes.triggers_common import TriggersDep
from stratus.gateway.state import Parts, namespace_of
from stratus.jobs.request import JobRequest
from stratus.security.roles import Permission
from stratus.spec import NAME_PATTERN

router = APIRouter(prefix="/api/schedules", tags=["triggers"])


class ScheduleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    cron: str = Field(description="5 fields, or 6 with croniter's trailing seconds field",
                      max_length=200)
    deployment: str | None = Field(default=None, pattern=NAME_PATTERN,
                                   description="The deployment each tick invokes")
    payload: Any = Field(default_factory=dict, description="The JSON body of each invocation")
    job: JobRequest | None = Field(default=None, description=(
        "Instead of a deployment: the job each tick submits, the body of POST /api/jobs"))
    timezone: str = Field("UTC", description="IANA time zone the cron fields are read in")
    catch_up: str = Field("one", description="Ticks missed while the server was down: "
                                             "none (skip), one (run once), all (run each)")


@router.post("", dependencies=[needs(Permission.WRITE)], status_code=201,
             summary="Create a cron schedule")
async def create_schedule(body: ScheduleRequest, request: Request, triggers: TriggersDep,
                          parts: Parts) -> JSONResponse:
    """Either ``deployment`` (with ``payload``) or ``job``. A job is checked as
    ``POST /api/jobs`` checks it (its bundle uploaded, its code imported, its datasets found)."""
    if body.job is not None and "payload" in body.model_fields_set:
        raise BadRequest("payload is the body of a deployment's invocation; a job schedule's "
                         "job has its own params")
    if body.job is not None:
        await share_referenced(request, parts, [body.job.code.bundle])
    view = await triggers.schedules.create(namespace_of(request), body.name, body.cron,
                                           body.timezone, body.catch_up,
                                           deployment=body.deployment, payload=body.payload,
                                           job=body.job)
    return JSONResponse(view, status_code=201)


@router.get("", dependencies=[needs(Permission.READ)], summary="The namespace's schedules")
async def list_schedules(request: Request, triggers: TriggersDep) -> dict[str, Any]:
    return {"schedules": await triggers.schedules.ls(namespace_of(request))}


@router.get("/{name}", dependencies=[needs(Permission.READ)], summary="One schedule")
async def show_schedule(name: str, request: Request, triggers: TriggersDep) -> dict[str, Any]:
    return await triggers.schedules.get(namespace_of(request), name)


@router.delete("/{name}", dependencies=[needs(Permission.WRITE)], summary="Delete a schedule")
async def delete_schedule(name: str, request: Request, triggers: TriggersDep) -> dict[str, Any]:
    await triggers.schedules.delete(namespace_of(request), name)
    return {"deleted": name}
