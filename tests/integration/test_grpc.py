"""The Open Inference Protocol v2 over gRPC with the official Triton gRPC client against a real
server and replicas: metadata, readiness, raw tensors, results equal to the HTTP route's,
streaming, a cold start, a traffic split, the health service and reflection."""

from __future__ import annotations

import queue
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from server import StratusServer, wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def client(grpc_server: StratusServer) -> Iterator[triton.InferenceServerClient]:
    grpc_server.deploy("grpc", "app.py:Mirror", name="g-mirror", min_replicas=1, ready=1)
    instance = triton.InferenceServerClient(url=grpc_server.grpc_target)
    yield instance
    instance.close()


@pytest.fixture
def auth(grpc_server: StratusServer) -> dict[str, str]:
    return {"authorization": f"Bearer {grpc_server.key}"}


def _input(name: str, array: np.ndarray[Any, Any], datatype: str) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)  # tritonclient.grpc sends raw_input_contents
    return tensor


def test_health_and_metadata(grpc_server: StratusServer, client: triton.InferenceServerClient,
                             auth: dict[str, str]) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata(headers=auth, as_json=True)
    assert metadata["name"] == "stratus" and metadata["extensions"] == ["binary_tensor_data"]
    assert client.is_model_ready("g-mirror", headers=auth)
    assert client.is_model_ready("g-mirror", model_version="1", headers=auth)
    model = client.get_model_metadata("g-mirror", headers=auth, as_json=True)
    http = grpc_server.http.get("/v2/models/g-mirror").json()
    assert model["name"] == http["name"] == "g-mirror"
    assert model["versions"] == http["versions"] == ["1"]
    assert model["platform"] == "stratus"


@pytest.mark.parametrize(("datatype", "array"), [
    ("FP32", np.array([[1.5, -2.25, 3.0]], dtype=np.float32)),
    ("INT64", np.array([2**62, -5, 0], dtype=np.int64)),
    ("BYTES", np.array([b"hello", b"", "wörld".encode(), b"\x00\xff"], dtype=np.object_)),
])
def test_raw_tensors_round_trip(client: triton.InferenceServerClient, auth: dict[str, str],
                                datatype: str, array: np.ndarray[Any, Any]) -> None:
    result = client.infer("g-mirror", [_input("t", array, datatype)], headers=auth,
                          request_id="req-9")
    out = result.as_numpy("t_out")
    assert out.shape == array.shape
    if datatype == "BYTES":
        assert [bytes(v) for v in out.reshape(-1)] == list(array.reshape(-1))
    else:
        assert out.dtype == array.dtype
        np.testing.assert_array_equal(out, array)
    response = result.get_response()
    assert response.model_name == "g-mirror" and response.model_version == "1"
    assert response.id == "req-9"
    assert len(response.raw_output_contents) == len(response.outputs)  # raw in, raw out


def test_digits_answers_as_the_http_route_does(grpc_server: StratusServer, tmp_path: Path,
                                               client: triton.InferenceServerClient,
                                               auth: dict[str, str]) -> None:
    """examples/digits, trained here (its weights are never committed), answers the same
    tensors over gRPC as over HTTP v2."""
    work = tmp_path / "digits"
    shutil.copytree(ROOT / "examples" / "digits", work,
                    ignore=shutil.ignore_patterns("weights.safetensors", "__pycache__"))
    subprocess.run([sys.executable, "-c", "from train import train; train(epochs=2)"], cwd=work,
                   check=True, capture_output=True, timeout=300)
    digest = grpc_server.upload_dir(work)
    deployed = grpc_server.http.post("/api/deployments", json={
        "name": "g-digits", "min_replicas": 1,
        "code": {"bundle": digest, "entrypoint": "model.py:Digits"}})
    assert deployed.status_code == 200, deployed.text
    grpc_server.wait_ready("g-digits", 1, timeout=120)
    pixels = np.random.default_rng(7).uniform(0, 16, (5, 64)).astype(np.float32)
    result = client.infer("g-digits", [_input("pixels", pixels, "FP32")], headers=auth)
    http = grpc_server.http.post("/v2/models/g-digits/infer", json={"inputs": [{
        "name": "pixels", "datatype": "FP32", "shape": [5, 64], "data": pixels.tolist()}]})
    assert http.status_code == 200, http.text
    outputs = {output["name"]: output for output in http.json()["outputs"]}
    assert result.as_numpy("digit").dtype == np.int64
    np.testing.assert_array_equal(result.as_numpy("digit"), outputs["digit"]["data"])
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (5, 10) == tuple(outputs["probabilities"]["shape"])
    np.testing.assert_array_equal(probabilities.reshape(-1),
                                  np.array(outputs["probabilities"]["data"], dtype=np.float32))


def test_a_streaming_model_answers_each_item_on_the_stream(
        grpc_server: StratusServer, client: triton.InferenceServerClient,
        auth: dict[str, str]) -> None:
    grpc_server.deploy("grpc", "app.py:Countdown", name="g-countdown", min_replicas=1, ready=1)
    answers: queue.Queue[Any] = queue.Queue()
    stream_client = triton.InferenceServerClient(url=grpc_server.grpc_target)
    try:
        stream_client.start_stream(lambda result, error: answers.put((result, error)),
                                   headers=auth)
        stream_client.async_stream_infer("g-countdown", [
            _input("n", np.array([4], dtype=np.int64), "INT64")], request_id="count")
        # A model that does not stream answers once on the same stream.
        stream_client.async_stream_infer("g-mirror", [
            _input("t", np.array([1.0], dtype=np.float32), "FP32")], request_id="once")
        got: dict[str, list[Any]] = {"count": [], "once": []}
        for _ in range(5):
            result, error = answers.get(timeout=30)
            assert error is None, error
            response = result.get_response()
            got[response.id].append(result)
        assert [int(r.as_numpy("left")[0]) for r in got["count"]] == [3, 2, 1, 0]
        assert got["once"][0].as_numpy("t_out").tolist() == [1.0]
        # A request that fails answers with its error, and the stream goes on.
        stream_client.async_stream_infer("g-nowhere", [
            _input("t", np.array([1.0], dtype=np.float32), "FP32")])
        result, error = answers.get(timeout=30)
        assert result is None and "'g-nowhere' not found" in str(error)
    finally:
        stream_client.stop_stream()
        stream_client.close()


def test_a_cold_start_from_zero(grpc_server: StratusServer, client: triton.InferenceServerClient,
                                auth: dict[str, str]) -> None:
    grpc_server.deploy("grpc", "app.py:Mirror", name="g-cold", min_replicas=0,
                       scale_to_zero_after_s=1)
    assert grpc_server.status("g-cold")["replicas"]["ready"] == 0
    result = client.infer("g-cold", [_input("t", np.array([2.0], dtype=np.float32), "FP32")],
                          headers=auth, client_timeout=60)
    assert result.as_numpy("t_out").tolist() == [2.0]
    assert grpc_server.status("g-cold")["replicas"]["ready"] == 1


def test_a_traffic_split_is_honoured(grpc_server: StratusServer,
                                     client: triton.InferenceServerClient,
                                     auth: dict[str, str]) -> None:
    name = "g-split"
    grpc_server.deploy("grpc", "app.py:Mirror", name=name, min_replicas=1)
    second = grpc_server.deploy("grpc", "app.py:Mirror", name=name, min_replicas=1,
                                config={"second": True}, rollout={"promote": False})
    assert second["revision"] == 2
    split = grpc_server.http.put(f"/api/deployments/{name}/traffic",
                                 json={"traffic": {"1": 50, "2": 50}})
    assert split.status_code == 200, split.text
    counts = {"1": 0, "2": 0}
    tensor = _input("t", np.array([1.0], dtype=np.float32), "FP32")
    for _ in range(60):
        result = client.infer(name, [tensor], headers=auth)
        version = result.get_response().model_version
        assert int(result.as_numpy("revision")[0]) == int(version)  # the one that answered
        counts[version] += 1
    assert counts["1"] >= 12 and counts["2"] >= 12, counts  # 50/50: p < 1e-5 to miss
    pinned = client.infer(name, [tensor], model_version="2", headers=auth)
    assert pinned.get_response().model_version == "2"


def test_health_check_and_watch(grpc_server: StratusServer, client: triton.InferenceServerClient,
                                auth: dict[str, str]) -> None:
    grpc_server.deploy("grpc", "app.py:Mirror", name="g-health", min_replicas=0)
    metadata = tuple(auth.items())
    with grpc.insecure_channel(grpc_server.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        serving = health_pb2.HealthCheckResponse.SERVING
        # The server, as Kubernetes probes it: no credentials.
        assert health.Check(health_pb2.HealthCheckRequest(service="")).status == serving
        assert health.Check(health_pb2.HealthCheckRequest(
            service="inference.GRPCInferenceService")).status == serving
        # Scaled to zero, a deployment can serve: the next request starts a replica.
        wait_for(lambda: _check(health, "g-health", metadata) == serving, 10, "g-health SERVING")
        assert _check(health, "default/g-health", metadata) == serving
        with pytest.raises(grpc.RpcError) as unknown:
            health.Check(health_pb2.HealthCheckRequest(service="g-none"), metadata=metadata)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as anonymous:
            health.Check(health_pb2.HealthCheckRequest(service="g-health"))
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
        watch = health.Watch(health_pb2.HealthCheckRequest(service="g-health"),
                             metadata=metadata, timeout=30)
        assert next(watch).status == serving
        grpc_server.delete("g-health")
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        watch.cancel()


def _check(health: Any, service: str, metadata: tuple[tuple[str, str], ...]) -> int:
    try:
        status: int = health.Check(health_pb2.HealthCheckRequest(service=service),
                                   metadata=metadata).status
    except grpc.RpcError:
        return -1
    return status


def test_reflection_lists_the_services(grpc_server: StratusServer) -> None:
    with grpc.insecure_channel(grpc_server.grpc_target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = stub.ServerReflectionInfo(iter([
            reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
        services = {service.name for answer in answers
                    for service in answer.list_services_response.service}
    assert services == {"inference.GRPCInferenceService", "grpc.health.v1.Health",
                        "grpc.reflection.v1alpha.ServerReflection"}
