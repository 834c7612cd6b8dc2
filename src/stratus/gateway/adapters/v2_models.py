"""What the Open Inference Protocol says of a server and its models, whatever the transport:
the HTTP routes (``gateway/routes/v2.py``) and the gRPC service (``stratus.grpc_api``) answer
from here. A model is a deployment; its versions are the deployment's live revisions.
"""

from __future__ import annotations

from typing import Any

import stratus
from stratus.control.controller import Controller
from stratus.control.unit import DeploymentUnit
from stratus.errors import NotFound

EXTENSIONS = ("binary_tensor_data",)


def server_metadata() -> dict[str, Any]:
    return {"name": "stratus", "version": stratus.__version__, "extensions": list(EXTENSIONS)}


def find_model(controller: Controller, namespace: str, name: str,
               version: str | None) -> DeploymentUnit:
    """The deployment ``name`` of ``namespace``, which must have ``version`` live if one is
    named; another namespace's deployment is as unknown as a missing one (404)."""
    unit = controller.get_unit(namespace, name)
    if version is not None and (not version.isdigit() or int(version) not in unit.revisions):
        raise NotFound(f"model {name!r} has no live version {version!r}")
    return unit


def model_metadata(unit: DeploymentUnit, version: str | None) -> dict[str, Any]:
    number = int(version) if version is not None else unit.stable or unit.latest
    handler = unit.revisions[number].pool.meta.get("options", {}) if number in unit.revisions else {}
    return {
        "name": unit.name,
        "versions": [str(n) for n in sorted(unit.revisions)],
        "platform": "stratus",
        "inputs": handler.get("inputs") or [],
        "outputs": handler.get("outputs") or [],
    }


def is_ready(unit: DeploymentUnit, version: str | None) -> bool:
    """The version (else the stable revision) is live and not failing to start. Scaled to zero
    is still ready: the next request starts a replica."""
    number = int(version) if version is not None else unit.stable
    live = unit.revisions.get(number) if number is not None else None
    return live is not None and live.pool.failure is None
