"""Bad gRPC calls get the gRPC status the contract's error maps to, with its message: unknown
models, wrong tensors, credentials, namespaces, sizes, rate limits and deadlines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from server import StratusServer, searchable_above, wait_for


@pytest.fixture(scope="module")
def client(grpc_server: StratusServer) -> Iterator[triton.InferenceServerClient]:
    grpc_server.upload("basic")
    grpc_server.deploy("basic", "app.py:Doubler", name="ge-doubler", min_replicas=1, ready=1)
    instance = triton.InferenceServerClient(url=grpc_server.grpc_target)
    yield instance
    instance.close()


@pytest.fixture
def auth(grpc_server: StratusServer) -> dict[str, str]:
    return {"authorization": f"Bearer {grpc_server.key}"}


def _rows(shape: tuple[int, ...], dtype: Any = np.float32, datatype: str = "FP32",
          name: str = "x") -> list[triton.InferInput]:
    tensor = triton.InferInput(name, list(shape), datatype)
    tensor.set_data_from_numpy(np.ones(shape, dtype=dtype))
    return [tensor]


def _refused(call: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


def test_a_priority_rides_in_metadata_and_a_bad_one_is_invalid(
        client: triton.InferenceServerClient, auth: dict[str, str]) -> None:
    served = client.infer("ge-doubler", _rows((1, 4)),
                          headers={**auth, "x-stratus-priority": "critical"})
    assert served.as_numpy("total").tolist() == [4.0]
    error = _refused(lambda: client.infer("ge-doubler", _rows((1, 4)),
                                          headers={**auth, "x-stratus-priority": "urgent"}))
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert "x-stratus-priority must be low, normal or critical" in error.message()

def test_unknown_model_is_not_found(client: triton.InferenceServerClient,
                                    auth: dict[str, str]) -> None:
    error = _refused(lambda: client.infer("ge-nowhere", _rows((1, 4)), headers=auth))
    assert error.status() == "StatusCode.NOT_FOUND"
    assert "deployment 'ge-nowhere' not found" in error.message()
    error = _refused(lambda: client.infer("ge-doubler", _rows((1, 4)), model_version="7",
                                          headers=auth))
    assert error.status() == "StatusCode.NOT_FOUND" and "no live version '7'" in error.message()
    error = _refused(lambda: client.get_model_metadata("ge-nowhere", headers=auth))
    assert error.status() == "StatusCode.NOT_FOUND"


def test_wrong_shape_and_datatype_name_the_tensor(client: triton.InferenceServerClient,
                                                  auth: dict[str, str]) -> None:
    error = _refused(lambda: client.infer("ge-doubler", _rows((2, 3)), headers=auth))
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert "input 'x' has shape [2, 3]; the model expects [-1, 4]" in error.message()
    error = _refused(lambda: client.infer("ge-doubler", _rows((1, 4), np.int32, "INT32"),
                                          headers=auth))
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert "input 'x' must be FP32, not INT32" in error.message()


def test_credentials(grpc_server: StratusServer, client: triton.InferenceServerClient) -> None:
    error = _refused(lambda: client.infer("ge-doubler", _rows((1, 4))))
    assert error.status() == "StatusCode.UNAUTHENTICATED"
    assert "missing bearer credentials" in error.message()
    error = _refused(lambda: client.infer("ge-doubler", _rows((1, 4)),
                                          headers={"authorization": "Bearer sk-wrong"}))
    assert error.status() == "StatusCode.UNAUTHENTICATED"
    key_id, key = grpc_server.mint_key("default", "invoker")
    mine = {"authorization": f"Bearer {key}"}
    assert client.infer("ge-doubler", _rows((1, 4)), headers=mine).as_numpy("doubled") is not None
    assert grpc_server.http.delete(f"/api/keys/{key_id}").status_code == 200
    error = _refused(lambda: client.infer("ge-doubler", _rows((1, 4)), headers=mine))
    assert error.status() == "StatusCode.UNAUTHENTICATED" and "revoked" in error.message()
    _, viewer = grpc_server.mint_key("default", "viewer")
    error = _refused(lambda: client.infer("ge-doubler", _rows((1, 4)),
                                          headers={"authorization": f"Bearer {viewer}"}))
    assert error.status() == "StatusCode.PERMISSION_DENIED"
    # Denials are audited as the HTTP edge's are.
    denied = grpc_server.http.get("/api/audit", params={"action": "grpc.ModelInfer"})
    assert denied.status_code == 200, denied.text
    records = denied.json()["records"]
    assert {(r["status"], r["result"]) for r in records} >= {(401, "denied"), (403, "denied")}


def test_another_namespaces_model_is_not_found(grpc_server: StratusServer,
                                               client: triton.InferenceServerClient) -> None:
    _, other = grpc_server.mint_key("ge-other", "admin")
    theirs = {"authorization": f"Bearer {other}"}
    error = _refused(lambda: client.infer("ge-doubler", _rows((1, 4)), headers=theirs))
    assert error.status() == "StatusCode.NOT_FOUND"
    error = _refused(lambda: client.is_model_ready("ge-doubler", headers=theirs))
    assert error.status() == "StatusCode.NOT_FOUND"
    # Naming the namespace does not help a namespaced key either.
    error = _refused(lambda: client.infer("ge-doubler", _rows((1, 4)),
                                          headers={**theirs, "x-stratus-namespace": "default"}))
    assert error.status() == "StatusCode.NOT_FOUND"


def test_an_oversized_message_is_resource_exhausted(client: triton.InferenceServerClient,
                                                    auth: dict[str, str]) -> None:
    # The tests' server takes bodies of up to 1 MiB (tests/server.py), gRPC messages too.
    error = _refused(lambda: client.infer("ge-doubler", _rows((70_000, 4)), headers=auth))
    assert error.status() == "StatusCode.RESOURCE_EXHAUSTED"


def test_a_handler_error_is_internal(grpc_server: StratusServer,
                                     client: triton.InferenceServerClient,
                                     auth: dict[str, str]) -> None:
    grpc_server.deploy("grpc", "app.py:Faulty", name="ge-faulty", min_replicas=1, ready=1)
    error = _refused(lambda: client.infer("ge-faulty", _rows((1,)), headers=auth))
    assert error.status() == "StatusCode.INTERNAL"
    assert "ValueError: boom: the handler failed" in error.message()


def _raw_request(name: str) -> Any:
    request = service_pb2.ModelInferRequest(model_name=name)
    request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(np.ones((1, 4), dtype=np.float32).tobytes())
    return request


def test_a_rate_limited_call_carries_retry_info(grpc_server: StratusServer,
                                                client: triton.InferenceServerClient) -> None:
    _, key = grpc_server.mint_key("default", "invoker", rate_limit_rps=0.5)
    metadata = (("authorization", f"Bearer {key}"),)
    with grpc.insecure_channel(grpc_server.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        errors = []
        for _ in range(4):
            try:
                stub.ModelInfer(_raw_request("ge-doubler"), metadata=metadata, timeout=30)
            except grpc.RpcError as error:
                errors.append(error)
    assert errors, "a key limited to 0.5 requests a second was never refused"
    refused = errors[0]
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailers = dict(refused.trailing_metadata())
    assert int(trailers["retry-after"]) >= 1 and trailers["x-request-id"]
    status = rpc_status.from_call(refused)
    assert status is not None and status.message == refused.details()
    kinds = {detail.type_url.rsplit("/", 1)[-1]: detail for detail in status.details}
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    kinds["google.rpc.ErrorInfo"].Unpack(info)
    kinds["google.rpc.RetryInfo"].Unpack(retry)
    assert info.reason == "rate_limited" and info.domain == "stratus"
    assert retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9 > 0


def test_an_expired_deadline_cancels_the_handler(grpc_server: StratusServer, tmp_path: Path,
                                                 client: triton.InferenceServerClient,
                                                 auth: dict[str, str]) -> None:
    tmp_path.chmod(0o777)  # the replica, its namespace's user, writes its markers here
    searchable_above(tmp_path)
    grpc_server.deploy("grpc", "app.py:Sleeper", name="ge-sleeper", min_replicas=1,
                       max_replicas=1, max_concurrency=1, timeout_s=120,
                       config={"marker_dir": str(tmp_path)}, ready=1)

    def sleep(seconds: float, marker: str) -> list[triton.InferInput]:
        duration = triton.InferInput("seconds", [1], "FP32")
        duration.set_data_from_numpy(np.array([seconds], dtype=np.float32))
        label = triton.InferInput("marker", [1], "BYTES")
        label.set_data_from_numpy(np.array([marker.encode()], dtype=np.object_))
        return [duration, label]

    error = _refused(lambda: client.infer("ge-sleeper", sleep(60, "long"), headers=auth,
                                          client_timeout=1.5))
    assert error.status() == "StatusCode.DEADLINE_EXCEEDED"
    assert (tmp_path / "long.started").exists()
    wait_for(lambda: (tmp_path / "long.cancelled").exists() or None, 15,
             "the handler to be cancelled")
    # Its only slot is free again.
    quick = client.infer("ge-sleeper", sleep(0, "quick"), headers=auth, client_timeout=30)
    assert quick.as_numpy("slept").tolist() == [0.0]
