"""The contract's errors as gRPC statuses: one table from each error's HTTP status to its
gRPC code, and the status a call ends with, carrying the contract's message, its error type
(a ``google.rpc.ErrorInfo``) and, for a refusal that a later retry can pass, a
``google.rpc.RetryInfo`` and a ``retry-after`` trailer (grpcio-status's encoding: the
``grpc-status-details-bin`` trailer).
"""

from __future__ import annotations

import math

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from stratus.errors import StratusError, retry_after_seconds

DOMAIN = "stratus"
REQUEST_ID_KEY = "x-request-id"
REVISION_KEY = "x-stratus-revision"
RETRY_AFTER_KEY = "retry-after"

# The one mapping: an error's HTTP status (errors.py) -> its gRPC code. Another namespace's
# model is a 404 like a missing one, so NOT_FOUND, never PERMISSION_DENIED.
CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.FAILED_PRECONDITION,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    502: grpc.StatusCode.UNAVAILABLE,  # the replica died: a retry runs on another
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
    507: grpc.StatusCode.RESOURCE_EXHAUSTED,  # gRPC's own example: the file system is full
}


def code_of(error: StratusError) -> grpc.StatusCode:
    return CODES.get(error.status, grpc.StatusCode.INTERNAL)


def _packed(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def trailers_of(error: StratusError, request_id: str) -> list[tuple[str, str | bytes]]:
    """The trailing metadata a failed call ends with: the rich status (the error's type as
    ``ErrorInfo.reason``, a ``RetryInfo`` when it has a retry delay), ``retry-after`` in whole
    seconds as HTTP sends it, the request id, and the revision that served, if one did."""
    code = code_of(error)
    details = [_packed(error_details_pb2.ErrorInfo(reason=error.type, domain=DOMAIN))]
    trailers: list[tuple[str, str | bytes]] = [(REQUEST_ID_KEY, request_id)]
    if error.retry_after is not None:
        delay = max(error.retry_after, 0.0)
        seconds = math.floor(delay)
        details.append(_packed(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(
            seconds=seconds, nanos=int((delay - seconds) * 1e9)))))
        trailers.append((RETRY_AFTER_KEY, str(retry_after_seconds(delay))))
    if error.revision is not None:
        trailers.append((REVISION_KEY, str(error.revision)))
    status = rpc_status.to_status(status_pb2.Status(code=code.value[0], message=error.message,
                                                    details=details))
    return [*trailers, *status.trailing_metadata]
