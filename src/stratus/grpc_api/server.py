"""The gRPC listener: a grpcio asyncio server on the gateway's event loop serving
``inference.GRPCInferenceService``, ``grpc.health.v1.Health`` and server reflection, started
and stopped by the server's lifespan when ``grpc_port`` is set.
"""

from __future__ import annotations

import functools
import logging

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from stratus.gateway.edge import Authenticator
from stratus.gateway.guard import Guard
from stratus.gateway.state import Components
from stratus.grpc_api.edge import SERVICE, Edge
from stratus.grpc_api.health import Health
from stratus.grpc_api.proto import grpc_inference_pb2 as pb
from stratus.grpc_api.proto import grpc_inference_pb2_grpc as pb_grpc
from stratus.grpc_api.service import InferenceService
from stratus.security.audit_log import AuditLog

log = logging.getLogger("stratus.grpc")

STOP_GRACE_S = 5.0  # calls in flight get this long to finish at shutdown


@functools.cache
def _reflection_pool() -> DescriptorPool:
    """The pool reflection answers from: Stratus's interface has a pool of its own (clients'
    stubs register the same ``inference`` package in protobuf's default pool), to which the
    health and reflection services' files are added once."""
    pool: DescriptorPool = pb.POOL
    for file in (health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR):
        pool.AddSerializedFile(file.serialized_pb)
    return pool


class GrpcServer:
    def __init__(self, parts: Components, authenticator: Authenticator, guard: Guard,
                 audit_log: AuditLog | None = None) -> None:
        settings = parts.settings
        edge = Edge(authenticator, guard, audit_log)
        # A message over the HTTP side's body limit is refused by gRPC itself, with
        # RESOURCE_EXHAUSTED, before any of it reaches the service.
        limit = settings.max_body_bytes
        self.server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", -1),
        ])
        self.health = Health(parts.controller, edge)
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(parts, edge),
                                                           self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection((
            SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME), self.server, pool=_reflection_pool())
        address = f"{settings.host}:{settings.grpc_port}"
        if self.server.add_insecure_port(address) == 0:
            raise OSError(f"cannot listen for gRPC on {address}")
        self.address = address

    async def start(self) -> None:
        await self.server.start()
        await self.health.start()
        log.info("gRPC (Open Inference Protocol v2, health, reflection) on %s", self.address)

    async def close(self) -> None:
        await self.health.close()  # NOT_SERVING first, so probes see the server going
        await self.server.stop(STOP_GRACE_S)
