"""The one table from the contract's errors to gRPC status codes, and the trailers a failed
call carries (google.rpc.Status with ErrorInfo and RetryInfo, retry-after, the request id)."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from stratus import errors
from stratus.grpc_api.status import code_of, trailers_of

EXPECTED = {
    errors.BadRequest: grpc.StatusCode.INVALID_ARGUMENT,
    errors.InvalidJSON: grpc.StatusCode.INVALID_ARGUMENT,
    errors.InvalidTensor: grpc.StatusCode.INVALID_ARGUMENT,
    errors.ContextLengthExceeded: grpc.StatusCode.INVALID_ARGUMENT,
    errors.DeployError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.Unauthorized: grpc.StatusCode.UNAUTHENTICATED,
    errors.Forbidden: grpc.StatusCode.PERMISSION_DENIED,
    errors.QuotaExceeded: grpc.StatusCode.PERMISSION_DENIED,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.Conflict: grpc.StatusCode.ABORTED,
    errors.Unprocessable: grpc.StatusCode.FAILED_PRECONDITION,
    errors.IdempotencyConflict: grpc.StatusCode.FAILED_PRECONDITION,
    errors.BodyTimeout: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.PayloadTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Shed: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.RateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.QuotaFull: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.InsufficientStorage: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.HandlerError: grpc.StatusCode.INTERNAL,
    errors.UnencodableOutput: grpc.StatusCode.INTERNAL,
    errors.OutOfMemory: grpc.StatusCode.INTERNAL,
    errors.IntegrityError: grpc.StatusCode.INTERNAL,
    errors.ReplicaLost: grpc.StatusCode.UNAVAILABLE,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DeploymentFailed: grpc.StatusCode.UNAVAILABLE,
    errors.RequestTimeout: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.StratusError: grpc.StatusCode.INTERNAL,
}


def _every_error_type() -> set[type[errors.StratusError]]:
    found: set[type[errors.StratusError]] = set()
    pending = [errors.StratusError]
    while pending:
        cls = pending.pop()
        found.add(cls)
        pending.extend(cls.__subclasses__())
    return {cls for cls in found if cls.__module__ == errors.__name__}


def test_every_contract_error_has_its_code() -> None:
    assert _every_error_type() - {errors.MethodNotAllowed} == set(EXPECTED)
    for cls, code in EXPECTED.items():
        assert code_of(cls("x")) == code, cls.__name__


@pytest.mark.parametrize(("retry_after", "header", "seconds", "nanos"),
                         [(2.5, "3", 2, 500_000_000), (0.2, "1", 0, 200_000_000)])
def test_a_retryable_refusal_carries_retry_info(retry_after: float, header: str, seconds: int,
                                                nanos: int) -> None:
    error = errors.RateLimited("slow down", retry_after=retry_after)
    trailers = dict(trailers_of(error, "req-1"))
    assert trailers["retry-after"] == header
    assert trailers["x-request-id"] == "req-1"
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert status.message == "slow down"
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info) and info.reason == "rate_limited"
    assert status.details[1].Unpack(retry)
    assert (retry.retry_delay.seconds, retry.retry_delay.nanos) == (seconds, nanos)


def test_an_error_without_a_delay_has_no_retry_info_and_names_its_revision() -> None:
    error = errors.HandlerError("ValueError: boom")
    error.revision = 3
    trailers = dict(trailers_of(error, "req-2"))
    assert "retry-after" not in trailers and trailers["x-stratus-revision"] == "3"
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    assert len(status.details) == 1 and status.code == grpc.StatusCode.INTERNAL.value[0]
