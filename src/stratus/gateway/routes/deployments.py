"""Control-plane routes: deployments, code bundles and logs under ``/api``."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse

from stratus.control.router import traffic_view
from stratus.errors import BadRequest
from stratus.gateway.audit import note_target
from stratus.gateway.authz import needs
from stratus.gateway.routes.blobs import share_referenced
from stratus.gateway.state import Parts, namespace_of
from stratus.observe.logread import follow as follow_log
from stratus.observe.logread import read_tail
from stratus.observe.logs import parse_since
from stratus.security.roles import Permission
from stratus.spec import DeploymentPatch, DeploymentRequest, RolloutRequest, TrafficUpdate

router = APIRouter(prefix="/api")


@router.post("/deployments",
             dependencies=[needs(Permission.WRITE)], status_code=200, summary="Create or update a deployment")
async def apply_deployment(
    body: DeploymentRequest, request: Request, parts: Parts
) -> dict[str, Any]:
    """Imports and validates the code (in a zygote), records a new revision when the runtime
    spec changed, and returns. Replicas start in the background; poll the deployment."""
    note_target(request, body.name or "")  # the code may name it; the view below says for sure
    await share_referenced(request, parts, [body.code.bundle] if body.code else [])
    view = await parts.controller.apply(namespace_of(request), body)
    note_target(request, view["name"])
    return view


@router.get("/deployments", dependencies=[needs(Permission.READ)], summary="List deployments")
async def list_deployments(
    request: Request, parts: Parts
) -> dict[str, Any]:
    units = parts.controller.list_units(namespace_of(request))
    return {"deployments": [unit.view() for unit in units]}


@router.get("/deployments/{name}", dependencies=[needs(Permission.READ)], summary="A deployment's status")
async def get_deployment(
    name: str, request: Request, parts: Parts
) -> dict[str, Any]:
    return parts.controller.get_unit(namespace_of(request), name).view()


@router.patch("/deployments/{name}",
              dependencies=[needs(Permission.WRITE)], summary="Change scaling or runtime settings")
async def patch_deployment(
    name: str, body: DeploymentPatch, request: Request, parts: Parts
) -> dict[str, Any]:
    return await parts.controller.patch(namespace_of(request), name, body)


@router.delete("/deployments/{name}", dependencies=[needs(Permission.WRITE)], summary="Delete a deployment")
async def delete_deployment(
    name: str, request: Request, parts: Parts
) -> dict[str, Any]:
    await parts.controller.delete(namespace_of(request), name)
    return {"deleted": name}


@router.get("/deployments/{name}/revisions",
            dependencies=[needs(Permission.READ)], summary="A deployment's revisions")
async def list_revisions(
    name: str, request: Request, parts: Parts
) -> dict[str, Any]:
    namespace = namespace_of(request)
    unit = parts.controller.get_unit(namespace, name)
    records = parts.controller.store.list_revisions(namespace, name)
    return {
        "revisions": [
            {
                "revision": record.number,
                "status": record.status,
                "reason": record.reason,
                "serving": record.number == unit.stable,
                "weight": unit.routing.traffic.get(record.number, 0),
                "routed": record.number in unit.routing.traffic,
                "shadow": record.number == unit.routing.shadow,
                "live": record.number in unit.revisions,
                "created_at": record.created_at.isoformat(),
                "spec": {**record.runtime.model_dump(), "env": sorted(record.runtime.env)},
            }
            for record in records
        ]
    }


@router.get("/deployments/{name}/traffic",
            dependencies=[needs(Permission.READ)], summary="The traffic split and rollout")
async def get_traffic(name: str, request: Request, parts: Parts) -> dict[str, Any]:
    """Weights per revision, shadow, sticky key, the rollout in flight, recent routing events,
    and each routed revision's requests, errors and latency over the last five minutes."""
    return traffic_view(parts.controller.get_unit(namespace_of(request), name))


@router.put("/deployments/{name}/traffic",
            dependencies=[needs(Permission.WRITE)], summary="Set the traffic split")
async def set_traffic(
    name: str, body: TrafficUpdate, request: Request, parts: Parts
) -> dict[str, Any]:
    """Weights sum to 100; fields left out keep their value. Ends any rollout in flight."""
    return await parts.controller.set_traffic(namespace_of(request), name, body)


@router.post("/deployments/{name}/rollout",
             dependencies=[needs(Permission.WRITE)], summary="Roll out a revision")
async def start_rollout(
    name: str, body: RolloutRequest, request: Request, parts: Parts
) -> dict[str, Any]:
    """Blue-green without ``canary``; a gradual canary with it, rolled back automatically when
    the new revision's error ratio or p95 latency is worse than the previous one's."""
    return await parts.controller.rollout(namespace_of(request), name, body)


@router.post("/deployments/{name}/rollback", dependencies=[needs(Permission.WRITE)], summary="Roll back")
async def rollback(name: str, request: Request, parts: Parts) -> dict[str, Any]:
    """Stops a rollout in flight, or returns traffic to the previous stable revision."""
    return await parts.controller.rollback(namespace_of(request), name)


@router.get("/deployments/{name}/autoscaler",
            dependencies=[needs(Permission.READ)], summary="The autoscaler's recent decisions")
async def autoscaler_decisions(name: str, request: Request, parts: Parts) -> dict[str, Any]:
    unit = parts.controller.get_unit(namespace_of(request), name)
    return {
        "policy": unit.scaling.policy,
        "scaling": unit.scaling.model_dump(),
        "target_concurrency": unit.effective_target(),
        "decisions": unit.decisions(),
    }


@router.get("/deployments/{name}/logs",
            dependencies=[needs(Permission.READ)], summary="A deployment's replica logs (JSON lines)",
            response_class=PlainTextResponse)
async def deployment_logs(
    name: str,
    request: Request,
    parts: Parts,
    tail: int = Query(200, ge=0, le=100_000),
    since: str | None = Query(None, description="a duration (10m, 2h) or an ISO time"),
    follow: bool = Query(False, description="keep the response open and send new lines"),
) -> Response:
    namespace = namespace_of(request)
    parts.controller.get_unit(namespace, name)
    path = parts.settings.log_dir / namespace / f"{name}.log"
    try:
        start = parse_since(since) if since else None
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    text, offset = await asyncio.to_thread(read_tail, path, tail, start)
    if not follow:
        return PlainTextResponse(text)
    return StreamingResponse(follow_log(path, offset, text, lambda: parts.ready),
                             media_type="text/plain; charset=utf-8")
