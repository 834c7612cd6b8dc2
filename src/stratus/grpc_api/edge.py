"""What every gRPC call goes through, as an HTTP request goes through ``gateway/edge.py`` and
``gateway/guard.py``: a request id, the principal of its ``authorization`` metadata, the
permission its RPC needs, the guard's rate limits and concurrency cap, the root span (a child
of the ``traceparent`` metadata), and at the end the call's status, mapped from the error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc

from stratus.errors import StratusError
from stratus.gateway.authz import DATA_PLANE, denial
from stratus.gateway.edge import Authenticator, request_id_of
from stratus.gateway.guard import Guard
from stratus.grpc_api.status import REQUEST_ID_KEY, code_of, trailers_of
from stratus.security.audit import AuditEvent, Result
from stratus.security.audit_log import AuditLog
from stratus.security.roles import Permission, Principal
from stratus.telemetry import tracing

log = logging.getLogger("stratus.grpc")

SERVICE = "inference.GRPCInferenceService"


@dataclass(slots=True)
class GrpcCall:
    """One admitted call as the service sees it."""

    principal: Principal
    request_id: str
    metadata: dict[str, str]  # the text metadata, keys lower-case as gRPC sends them


def text_metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    """The call's metadata without its binary (``-bin``) entries."""
    return {key: value for key, value in (context.invocation_metadata() or ())
            if isinstance(value, str)}


def remaining_s(context: grpc.aio.ServicerContext) -> float | None:
    """Seconds left before the client's deadline; None without one."""
    remaining = context.time_remaining()
    return None if remaining is None else max(float(remaining), 0.0)


class Edge:
    def __init__(self, authenticator: Authenticator, guard: Guard,
                 audit_log: AuditLog | None = None) -> None:
        self.authenticator = authenticator
        self.guard = guard
        self.audit_log = audit_log

    def principal(self, metadata: Mapping[str, str]) -> Principal | StratusError:
        authorization = metadata.get("authorization")
        namespace = metadata.get("x-stratus-namespace")
        return self.authenticator.authenticate_values(
            authorization.encode("latin-1") if authorization is not None else None,
            namespace.encode("latin-1") if namespace is not None else None)

    @asynccontextmanager
    async def call(self, context: grpc.aio.ServicerContext, rpc: str,
                   permission: Permission) -> AsyncIterator[GrpcCall]:
        """Admit one call, and end it with the gRPC status of any error raised inside."""
        metadata = text_metadata(context)
        given = metadata.get(REQUEST_ID_KEY)
        request_id = request_id_of(given.encode("latin-1") if given is not None else None).decode()
        principal = self.principal(metadata)
        if not isinstance(principal, StratusError) and not principal.allows(permission):
            principal = denial(principal, permission)
        path = f"/{SERVICE}/{rpc}"
        span = tracing.start_request_span(
            metadata, path, request_id,
            None if isinstance(principal, StratusError) else principal.namespace)
        token = tracing.enter(span)
        # Rate limits on every call; the concurrency cap on the data plane's.
        admitted = self.guard.enter(principal) if permission is DATA_PLANE else principal
        if isinstance(admitted, Principal) and permission is not DATA_PLANE:
            refused = self.guard.check_rate(admitted)
            admitted = refused if refused is not None else admitted
        status = 200
        try:
            if isinstance(admitted, StratusError):
                raise admitted
            yield GrpcCall(admitted, request_id, metadata)
        except StratusError as error:
            status = error.status
            await self._fail(context, error, request_id, metadata, principal, rpc)
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("unhandled error in %s", path)
            status = 500
            await self._fail(context, StratusError("internal server error"), request_id,
                             metadata, principal, rpc)
        finally:
            if permission is DATA_PLANE:
                self.guard.leave(admitted)
            if span is not None:
                tracing.set_http_status(span, status)
            tracing.leave(token, span)

    async def _fail(self, context: grpc.aio.ServicerContext, error: StratusError,
                    request_id: str, metadata: Mapping[str, str],
                    principal: Principal | StratusError, rpc: str) -> None:
        if error.status >= 500 and error.detail:
            log.warning("%s (request %s): %s\n%s", error.type, request_id, error.message,
                        error.detail)
        if error.status in (401, 403):
            self._audit_denial(context, error.status, request_id, principal, rpc)
        await context.abort(code_of(error), error.message, trailing_metadata=tuple(
            trailers_of(error, request_id)))

    def _audit_denial(self, context: grpc.aio.ServicerContext, status: int,
                      request_id: str, principal: Principal | StratusError, rpc: str) -> None:
        """As the HTTP edge does: every 401 and 403 is in the audit log."""
        if self.audit_log is None:
            return
        known = principal if isinstance(principal, Principal) else None
        self.audit_log.append(AuditEvent(
            at=time.time(), namespace=known.namespace if known else "",
            actor=known.actor if known else "anonymous", action=f"grpc.{rpc}", target="",
            source=context.peer() or "", result=Result.DENIED, status=status,
            request_id=request_id))
