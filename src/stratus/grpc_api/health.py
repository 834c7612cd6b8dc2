"""``grpc.health.v1.Health``: grpcio-health-checking's servicer, kept up to date from the
controller's state.

Service names: ``""`` is the server (SERVING once it has started; what Kubernetes' gRPC
probes ask, without credentials), ``inference.GRPCInferenceService`` the inference service,
and a deployment's name (in the caller's namespace, or ``namespace/name``) the deployment.
A deployment is SERVING when it can serve a request: its stable revision is live and not
failing to start. Scaled to zero it is SERVING, since a request starts a replica (a cold
start). Asking for a deployment takes the same ``authorization`` metadata as inference; a
deployment of another namespace is unknown (NOT_FOUND), as over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

from stratus.control.controller import Controller
from stratus.errors import NotFound, StratusError
from stratus.gateway.adapters.v2_models import is_ready
from stratus.grpc_api.edge import SERVICE, Edge, text_metadata
from stratus.grpc_api.status import code_of

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
SYNC_S = 0.25  # how often the deployments' statuses are read from the controller


class Health(health_aio.HealthServicer):  # type: ignore[misc]
    def __init__(self, controller: Controller, edge: Edge) -> None:
        super().__init__()
        self.controller = controller
        self.edge = edge
        self._known: dict[str, int] = {}  # "namespace/name" -> the status last set
        self._task: asyncio.Task[None] | None = None

    # -- the RPCs -----------------------------------------------------------------------
    async def Check(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        key = await self._key(request.service, context)
        status = self._server_status.get(key, SERVICE_UNKNOWN)
        if status == SERVICE_UNKNOWN:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: Any, context: grpc.aio.ServicerContext) -> None:
        key = await self._key(request.service, context)
        await super().Watch(health_pb2.HealthCheckRequest(service=key), context)

    async def _key(self, service: str, context: grpc.aio.ServicerContext) -> str:
        """The status map's key for ``service``: the server's names as they are, a
        deployment's as ``namespace/name`` once the caller may see it."""
        if service in ("", SERVICE):
            return service
        principal = self.edge.principal(text_metadata(context))
        if isinstance(principal, StratusError):
            await context.abort(code_of(principal), principal.message)
            raise principal  # not reached: abort raises
        namespace, _, name = service.rpartition("/")
        if namespace and namespace != principal.namespace and not principal.is_global:
            error = NotFound(f"deployment {name!r} not found")
            await context.abort(code_of(error), error.message)
        return f"{namespace or principal.namespace}/{name}"

    # -- kept up to date ----------------------------------------------------------------
    async def start(self) -> None:
        await self.set(SERVICE, SERVING)
        await self.sync()
        self._task = asyncio.create_task(self._follow())

    async def close(self) -> None:
        await self.enter_graceful_shutdown()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(SYNC_S)
            await self.sync()

    async def sync(self) -> None:
        """Set each deployment's status from the controller's state; one deleted is unknown."""
        current = {f"{unit.namespace}/{unit.name}": SERVING if is_ready(unit, None) else NOT_SERVING
                   for unit in list(self.controller.units.values())}
        for key, status in current.items():
            if self._known.get(key) != status:
                await self.set(key, status)
        for key in self._known.keys() - current.keys():
            await self.set(key, SERVICE_UNKNOWN)
        self._known = current
