"""Workflows under ``/api/workflows`` (deploy, list, show, delete, start an execution) and their
executions under ``/api/executions`` (show with history, list, cancel)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from stratus.errors import BadRequest, InvalidJSON, PayloadTooLarge
from stratus.gateway.authz import needs
from stratus.gateway.state import namespace_of
from stratus.security.roles import Permission
from stratus.workflows.history import TERMINAL
from stratus.workflows.parse import MAX_TEXT_BYTES
from stratus.workflows.runner import WorkflowRunner

router = APIRouter(prefix="/api", tags=["workflows"])
STATUSES = ("running", *sorted(TERMINAL))
MAX_WAIT_S = 300.0
_DEFINITION = {"requestBody": {"required": True, "content": {
    "application/yaml": {"schema": {"type": "string"}},
    "application/json": {"schema": {"type": "object", "description": "the workflow itself, or "
                                     "{\"definition\": \"<YAML or JSON text>\"}"}}}}}


def _runner(request: Request) -> WorkflowRunner:
    runner: WorkflowRunner = request.app.state.workflows
    return runner


async def _body(request: Request, limit: int) -> bytes:
    body = await request.body()
    if len(body) > limit:
        raise PayloadTooLarge(f"the body holds at most {limit} bytes")
    return body


def _definition(body: bytes, content_type: str) -> str:
    """The definition's text: the body as is (YAML, or a JSON workflow), or the string a JSON
    ``{"definition": ...}`` carries."""
    if "json" in content_type:
        try:
            document = json.loads(body)
        except ValueError as exc:
            raise InvalidJSON(f"the body is not valid JSON: {exc}") from None
        if isinstance(document, dict) and set(document) == {"definition"}:
            if not isinstance(document["definition"], str):
                raise BadRequest("definition: expected the workflow's YAML or JSON text")
            return document["definition"]
    try:
        return body.decode()
    except UnicodeDecodeError:
        raise BadRequest("a workflow definition is UTF-8 text") from None


@router.post("/workflows", dependencies=[needs(Permission.WRITE)], status_code=201,
             responses={200: {"description": "Replaced"}},
             summary="Deploy a workflow (YAML or JSON); replaces one of the same name",
             openapi_extra=_DEFINITION)
async def deploy_workflow(request: Request) -> JSONResponse:
    text = _definition(await _body(request, MAX_TEXT_BYTES),
                       request.headers.get("content-type", ""))
    info = await _runner(request).deploy(namespace_of(request), text)
    return JSONResponse(info, status_code=201 if info["created"] else 200)


@router.get("/workflows", dependencies=[needs(Permission.READ)], summary="The namespace's workflows")
async def list_workflows(request: Request) -> dict[str, Any]:
    return {"workflows": await _runner(request).list_workflows(namespace_of(request))}


@router.get("/workflows/{name}", dependencies=[needs(Permission.READ)],
            summary="A workflow: its definition and its steps' outline")
async def get_workflow(name: str, request: Request) -> dict[str, Any]:
    return await _runner(request).get_workflow(namespace_of(request), name)


@router.delete("/workflows/{name}", dependencies=[needs(Permission.WRITE)],
               summary="Delete a workflow; running executions finish")
async def delete_workflow(name: str, request: Request) -> dict[str, Any]:
    await _runner(request).delete_workflow(namespace_of(request), name)
    return {"deleted": name}


@router.post("/workflows/{name}/executions", dependencies=[needs(Permission.INVOKE)],
             status_code=202, responses={200: {"description": "Ended (with ?wait=true)"}},
             summary="Start an execution with the body as its input",
             openapi_extra={"requestBody": {"content": {"application/json": {"schema": {}}}}})
async def start_execution(name: str, request: Request,
                          wait: bool = Query(False, description="answer once it ends"),
                          timeout_s: float = Query(60.0, gt=0, le=MAX_WAIT_S,
                                                   description="seconds to wait at most")
                          ) -> JSONResponse:
    body = await _body(request, 1024 * 1024)
    try:
        payload = json.loads(body) if body.strip() else {}
    except ValueError as exc:
        raise InvalidJSON(f"the input is not valid JSON: {exc}") from None
    runner, namespace = _runner(request), namespace_of(request)
    live = await runner.start_execution(namespace, name, payload)
    location = {"location": f"/api/executions/{live.id}"}
    if wait:
        await runner.wait(live, timeout_s)
        if live.finished.is_set():
            view = runner.ended_view(live, name) or await runner.execution(namespace, live.id)
            return JSONResponse(view, headers=location)
    return JSONResponse({"id": live.id, "status": "running"}, status_code=202, headers=location)


@router.get("/executions", dependencies=[needs(Permission.READ)],
            summary="The namespace's executions, newest first (paginated)")
async def list_executions(request: Request, workflow: str | None = None,
                          status: str | None = Query(None, description=", ".join(STATUSES)),
                          limit: int = Query(50, ge=1, le=500),
                          cursor: str | None = Query(None, description="a next_cursor")
                          ) -> dict[str, Any]:
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status: one of {', '.join(STATUSES)}")
    return await _runner(request).executions(namespace_of(request), workflow, status, limit,
                                             cursor)


@router.get("/executions/{execution_id}", dependencies=[needs(Permission.READ)],
            summary="An execution: status, output or error, and each step's history")
async def get_execution(execution_id: str, request: Request) -> dict[str, Any]:
    return await _runner(request).execution(namespace_of(request), execution_id)


@router.delete("/executions/{execution_id}", dependencies=[needs(Permission.INVOKE)],
               summary="Cancel a running execution (its steps in flight are cancelled)")
async def cancel_execution(execution_id: str, request: Request) -> dict[str, Any]:
    return await _runner(request).cancel(namespace_of(request), execution_id)
