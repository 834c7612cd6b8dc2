"""Open Inference Protocol v2 with the official Triton HTTP client, JSON and binary tensors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from server import StratusServer, sticky_keys


@pytest.fixture(scope="module")
def client(server: StratusServer) -> Iterator[triton.InferenceServerClient]:
    server.deploy("basic", "app.py:Doubler", name="v2-doubler", min_replicas=1, ready=1)
    server.deploy("basic", "app.py:Mirror", name="v2-mirror", min_replicas=1, ready=1)
    instance = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    yield instance
    instance.close()


@pytest.fixture
def auth(server: StratusServer) -> dict[str, str]:
    # A fresh dict per test: tritonclient adds its own headers to the dict it is given.
    return {"Authorization": f"Bearer {server.key}"}


def test_health_and_metadata(client: triton.InferenceServerClient, auth: dict[str, str]) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("v2-doubler", headers=auth)
    assert client.is_model_ready("v2-doubler", model_version="1", headers=auth)
    assert not client.is_model_ready("v2-doubler", model_version="9", headers=auth)
    metadata = client.get_model_metadata("v2-doubler", headers=auth)
    assert metadata["name"] == "v2-doubler"
    assert metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert [o["name"] for o in metadata["outputs"]] == ["doubled", "total"]
    assert client.get_server_metadata(headers=auth)["extensions"] == ["binary_tensor_data"]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer(client: triton.InferenceServerClient, auth: dict[str, str], binary: bool) -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    tensor = triton.InferInput("x", [3, 4], "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    outputs = [triton.InferRequestedOutput("doubled", binary_data=binary),
               triton.InferRequestedOutput("total", binary_data=binary)]
    result = client.infer("v2-doubler", [tensor], outputs=outputs, headers=auth,
                          request_id="req-7")
    np.testing.assert_allclose(result.as_numpy("doubled"), x * 2, rtol=1e-6)
    np.testing.assert_allclose(result.as_numpy("total"), x.astype(np.float64).sum(1))
    assert result.as_numpy("total").dtype == np.float64
    response = result.get_response()
    assert response["model_name"] == "v2-doubler"
    assert response["model_version"] == "1"
    assert response["id"] == "req-7"


def test_infer_on_a_version(client: triton.InferenceServerClient, auth: dict[str, str]) -> None:
    tensor = triton.InferInput("x", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
    result = client.infer("v2-doubler", [tensor], model_version="1", headers=auth)
    np.testing.assert_array_equal(result.as_numpy("doubled"), np.full((1, 4), 2, np.float32))
    with pytest.raises(InferenceServerException, match="no live version"):
        client.infer("v2-doubler", [tensor], model_version="5", headers=auth)


CASES: list[tuple[str, Any]] = [
    ("FP32", np.array([[1.5, -2.25]], dtype=np.float32)),
    ("FP64", np.array([1e-300, 3.5], dtype=np.float64)),
    ("INT32", np.array([[-(2**31), 7], [0, 2**31 - 1]], dtype=np.int32)),
    ("INT64", np.array([2**62, -5], dtype=np.int64)),
    ("BOOL", np.array([[True, False, True]], dtype=bool)),
    ("BYTES", np.array([b"hello", b"", "wörld".encode()], dtype=np.object_)),
    ("UINT8", np.array([0, 255], dtype=np.uint8)),
    ("FP16", np.array([0.5, -1.0], dtype=np.float16)),
]


# tritonclient refuses to put FP16 in JSON, so that pair is binary only.
ROUND_TRIPS = [pytest.param(datatype, array, binary, id=f"{datatype}-{'binary' if binary else 'json'}")
               for datatype, array in CASES for binary in (False, True)
               if binary or datatype != "FP16"]


@pytest.mark.parametrize(("datatype", "array", "binary"), ROUND_TRIPS)
def test_every_datatype_round_trips(client: triton.InferenceServerClient, auth: dict[str, str],
                                    datatype: str, array: Any, binary: bool) -> None:
    tensor = triton.InferInput("t", list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    result = client.infer("v2-mirror", [tensor], headers=auth,
                          outputs=[triton.InferRequestedOutput("t_out", binary_data=binary)])
    out = result.as_numpy("t_out")
    assert out.shape == array.shape
    if datatype == "BYTES":
        # JSON carries BYTES as UTF-8 strings; the binary extension as raw bytes.
        got = [v.encode() if isinstance(v, str) else bytes(v) for v in out.reshape(-1)]
        assert got == list(array.reshape(-1))
    else:
        np.testing.assert_array_equal(out, array)


def test_wrong_shape_and_dtype_are_rejected(client: triton.InferenceServerClient,
                                            auth: dict[str, str]) -> None:
    wrong_shape = triton.InferInput("x", [2, 3], "FP32")
    wrong_shape.set_data_from_numpy(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException, match=r"shape \[2, 3\]"):
        client.infer("v2-doubler", [wrong_shape], headers=auth)
    wrong_dtype = triton.InferInput("x", [1, 4], "INT32")
    wrong_dtype.set_data_from_numpy(np.zeros((1, 4), dtype=np.int32))
    with pytest.raises(InferenceServerException, match="must be FP32"):
        client.infer("v2-doubler", [wrong_dtype], headers=auth)
    unknown = triton.InferInput("y", [1, 4], "FP32")
    unknown.set_data_from_numpy(np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(InferenceServerException, match="unknown input"):
        client.infer("v2-doubler", [unknown], headers=auth)


def test_malformed_v2_bodies(server: StratusServer, client: triton.InferenceServerClient) -> None:
    def post(body: Any) -> dict[str, str]:
        response = server.http.post("/v2/models/v2-mirror/infer", json=body)
        assert response.status_code == 400, response.text
        # The OIP v2 error shape: {"error": "<message>"}, plus the type and request id.
        error: dict[str, str] = response.json()
        assert isinstance(error["error"], str)
        assert error["request_id"] == response.headers["x-request-id"]
        return error

    assert post({"nope": 1})["error_type"] == "invalid_tensor"
    error = post({"inputs": [{"name": "a", "datatype": "FP32", "shape": [2], "data": [1.0]}]})
    assert "do not fit shape" in error["error"]
    error = post({"inputs": [{"name": "a", "datatype": "INT32", "shape": [1], "data": ["x"]}]})
    assert "cannot be INT32" in error["error"]
    error = post({"inputs": [{"name": "a", "datatype": "FP128", "shape": [1], "data": [1]}]})
    assert "unsupported datatype" in error["error"]
    error = post({"inputs": [{"name": "a", "datatype": "FP32", "shape": [-1], "data": []}]})
    assert "shape" in error["error"]
    response = server.http.post("/v2/models/v2-mirror/infer", content=b"{oops")
    assert response.status_code == 400 and response.json()["error_type"] == "invalid_json"
    response = server.http.post("/v2/models/v2-mirror/infer", content=b'{"inputs": []}xx',
                                headers={"inference-header-content-length": "999"})
    assert response.status_code == 400


def test_lambda_deployments_refuse_v2(server: StratusServer) -> None:
    server.deploy("basic", "app.py:handler", name="v2-lambda")
    response = server.http.post("/v2/models/v2-lambda/infer", json={"inputs": []})
    assert response.status_code == 400
    assert "Lambda-style" in response.json()["error"]


def test_tensor_handler_on_the_native_route_is_a_clear_error(server: StratusServer,
                                                             client: Any) -> None:
    response = server.invoke("v2-doubler", {"x": [[1, 2, 3, 4]]})
    # The native route hands over JSON: this handler multiplies a list and fails clearly.
    assert response.status_code in (400, 500)
    assert response.json()["error"]["message"]


def _rows_of(width: int) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, width],
                        "data": [[1.0] * width]}]}


def test_inputs_are_checked_against_the_revision_the_split_chose(server: StratusServer) -> None:
    """Revision 1 takes rows of four; revision 2, which the split gives half the traffic while
    1 stays stable, takes rows of two. A request is checked against the revision that serves
    it, not the stable one."""
    name = "v2-canary"
    assert server.deploy("basic", "app.py:Doubler", name=name, min_replicas=1)["revision"] == 1
    second = server.deploy("basic", "app.py:PairDoubler", name=name, min_replicas=1,
                           rollout={"promote": False})
    assert second["revision"] == 2
    split = server.http.put(f"/api/deployments/{name}/traffic",
                            json={"traffic": {"1": 50, "2": 50}, "sticky": {"header": "x-user"}})
    assert split.status_code == 200 and split.json()["stable"] == 1, split.text
    keys = sticky_keys({1: 50, 2: 50})
    url = f"/v2/models/{name}/infer"

    served = server.http.post(url, json=_rows_of(2), headers={"x-user": keys[2]})
    assert served.status_code == 200, served.text
    assert served.headers["x-stratus-revision"] == "2" and served.json()["model_version"] == "2"
    assert served.json()["outputs"][0]["data"] == [2.0, 2.0]
    refused = server.http.post(url, json=_rows_of(4), headers={"x-user": keys[2]})
    assert refused.status_code == 400, refused.text
    assert "has shape [1, 4]; the model expects [-1, 2]" in refused.json()["error"]
    stable = server.http.post(url, json=_rows_of(4), headers={"x-user": keys[1]})
    assert stable.status_code == 200 and stable.headers["x-stratus-revision"] == "1", stable.text

    pinned = server.http.post(url, json=_rows_of(2), headers={"x-stratus-revision": "2"})
    assert pinned.status_code == 200 and pinned.headers["x-stratus-revision"] == "2"
    on_version = server.http.post(f"/v2/models/{name}/versions/1/infer", json=_rows_of(2))
    assert on_version.status_code == 400 and "the model expects [-1, 4]" in on_version.json()["error"]
    unknown = server.http.post(f"/v2/models/{name}/versions/3/infer", json=_rows_of(2))
    assert unknown.status_code == 404 and "no live version '3'" in unknown.json()["error"]
    missing = server.http.post("/v2/models/v2-nowhere/versions/1/infer", json=_rows_of(2))
    assert missing.status_code == 404 and "'v2-nowhere' not found" in missing.json()["error"]
