"""``GET /v1/models``: the deployments that serve the OpenAI-compatible APIs, in OpenAI's list
shape, each with the model version it serves."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from stratus.control.unit import DeploymentUnit
from stratus.gateway.adapters.openai import ModelNotFound
from stratus.gateway.authz import needs
from stratus.gateway.state import Parts, namespace_of
from stratus.security.roles import Permission

router = APIRouter(prefix="/v1", tags=["openai"])


def _model_object(unit: DeploymentUnit) -> dict[str, Any] | None:
    serving = unit.stable_revision() or unit.latest_revision()
    if serving is None or serving.runtime.api == "native":
        return None
    served = serving.runtime.models[0] if serving.runtime.models else {}
    return {
        "id": unit.name,
        "object": "model",
        "created": int(unit.created_at.timestamp()),
        "owned_by": unit.namespace,
        "api": serving.runtime.api,
        "root": f"{served.get('name')}@{served.get('version')}" if served else None,
        "revision": serving.number,
    }


@router.get("/models",
            dependencies=[needs(Permission.AUTHENTICATED)],
            summary="OpenAI-compatible: the LLM and embedding deployments")
async def list_models(parts: Parts, request: Request) -> dict[str, Any]:
    found = (_model_object(unit) for unit in parts.controller.list_units(namespace_of(request)))
    return {"object": "list", "data": [model for model in found if model is not None]}


@router.get("/models/{model}",
            dependencies=[needs(Permission.AUTHENTICATED)],
            summary="OpenAI-compatible: one LLM or embedding deployment")
async def get_model(model: str, parts: Parts, request: Request) -> dict[str, Any]:
    for unit in parts.controller.list_units(namespace_of(request)):
        if unit.name == model:
            found = _model_object(unit)
            if found is not None:
                return found
    raise ModelNotFound(f"The model '{model}' does not exist")
