"""``@stratus.batch`` through a real server and real replicas: per-caller answers under
concurrency on the native and v2 routes, isolated and whole-batch errors, and the histogram."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from server import StratusServer, wait_for

SQUARES, AFFINE, LENGTHS = "bat-squares", "bat-affine", "bat-lengths"


@pytest.fixture(scope="module")
def deployed(server: StratusServer) -> Iterator[StratusServer]:
    # One replica each, so concurrent requests meet in one batcher.
    for name, entrypoint in ((SQUARES, "app.py:Squares"), (AFFINE, "app.py:Affine"),
                             (LENGTHS, "app.py:Lengths")):
        server.deploy("batching", entrypoint, name=name, min_replicas=1, max_replicas=1)
    for name in (SQUARES, AFFINE, LENGTHS):
        server.wait_ready(name)
    yield server
    for name in (SQUARES, AFFINE, LENGTHS):
        server.delete(name)


def post_all(server: StratusServer, path: str, bodies: list[Any]) -> list[httpx.Response]:
    """POST every body at once, each on its own connection."""

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60,
                                     headers={"authorization": f"Bearer {server.key}"}) as client:
            return await asyncio.gather(*(client.post(path, json=body) for body in bodies))

    return asyncio.run(burst())


def invoke_all(server: StratusServer, name: str, bodies: list[Any]) -> list[httpx.Response]:
    return post_all(server, f"/api/deployments/{name}/invoke", bodies)


def handler_error(response: httpx.Response) -> str:
    """The contract's error shape for a failed handler; returns the message."""
    assert response.status_code == 500, response.text
    error = response.json()["error"]
    assert error["type"] == "handler_error"
    assert error["request_id"] == response.headers["x-request-id"]
    message: str = error["message"]
    return message


def test_concurrent_callers_each_get_their_own_answer(deployed: StratusServer) -> None:
    responses = invoke_all(deployed, SQUARES, [{"x": x} for x in range(64)])
    assert [r.status_code for r in responses] == [200] * 64
    answers = [r.json() for r in responses]
    assert [a["y"] for a in answers] == [x * x for x in range(64)]
    sizes = {a["batch_id"]: a["batch"] for a in answers}
    assert max(sizes.values()) > 1, "64 concurrent requests should have shared batches"
    assert max(sizes.values()) <= 16
    assert sum(sizes.values()) == 64  # every caller in exactly one batch


def test_a_bad_item_fails_its_caller_only(deployed: StratusServer) -> None:
    bodies: list[dict[str, Any]] = [{"x": x} for x in range(16)]
    bodies[5]["poison"] = True
    bodies[9]["reject"] = True
    responses = invoke_all(deployed, SQUARES, bodies)
    assert handler_error(responses[5]) == "ValueError: poisoned item 5"
    assert responses[9].status_code == 400  # a Stratus error keeps its own status
    assert responses[9].json()["error"] == {"type": "invalid_request", "message": "x=9 is out of range",
                                            "request_id": responses[9].headers["x-request-id"]}
    others = [r for i, r in enumerate(responses) if i not in (5, 9)]
    assert [r.status_code for r in others] == [200] * 14
    assert [r.json()["y"] for r in others] == [x * x for x in range(16) if x not in (5, 9)]


def test_a_raising_batch_fails_exactly_its_callers_and_the_replica_serves_on(
        deployed: StratusServer) -> None:
    pid = deployed.invoke(SQUARES, {"x": 1}).json()["pid"]
    bodies: list[dict[str, Any]] = [{"x": x} for x in range(24)]
    bodies[3]["explode"] = True
    responses = invoke_all(deployed, SQUARES, bodies)
    failed_batches = set()
    for response in responses:
        if response.status_code != 200:
            found = re.fullmatch(r"RuntimeError: batch (\d+) failed as a whole", handler_error(response))
            assert found, response.text
            failed_batches.add(int(found.group(1)))
    served = [r.json() for r in responses if r.status_code == 200]
    assert responses[3].status_code == 500
    assert failed_batches and not failed_batches & {a["batch_id"] for a in served}
    for body, response in zip(bodies, responses, strict=True):
        if response.status_code == 200:
            assert response.json()["y"] == body["x"] ** 2
    after = deployed.invoke(SQUARES, {"x": 9})
    assert after.status_code == 200 and after.json()["y"] == 81 and after.json()["pid"] == pid


def test_a_wrong_length_answer_fails_the_batch(deployed: StratusServer) -> None:
    message = handler_error(deployed.invoke(SQUARES, {"x": 2, "short": True}))
    assert message == "BatchError: Squares.square returned 0 results for a batch of 1"


def test_a_lone_caller_is_served_when_the_wait_expires(deployed: StratusServer) -> None:
    response = deployed.invoke(SQUARES, {"x": 12})
    assert response.status_code == 200
    assert response.json()["y"] == 144 and response.json()["batch"] == 1


def test_v2_requests_are_batched_and_answered_row_for_row(deployed: StratusServer) -> None:
    inputs = [np.arange(4 * (1 + i % 3), dtype=np.float32).reshape(-1, 4) + 100 * i for i in range(32)]
    bodies = [{"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape),
                           "data": x.reshape(-1).tolist()}]} for x in inputs]
    responses = post_all(deployed, f"/v2/models/{AFFINE}/infer", bodies)
    assert [r.status_code for r in responses] == [200] * 32, responses[0].text
    sizes = []
    for x, response in zip(inputs, responses, strict=True):
        outputs = {o["name"]: o for o in response.json()["outputs"]}
        assert outputs["y"]["shape"] == list(x.shape)
        np.testing.assert_allclose(np.array(outputs["y"]["data"]).reshape(x.shape), 2 * x + 1)
        sizes.append(outputs["batch"]["data"][0])
    assert max(sizes) > 1


def test_an_async_handler_batches_on_the_event_loop(deployed: StratusServer) -> None:
    texts = ["x" * n for n in range(32)]
    responses = invoke_all(deployed, LENGTHS, [{"text": t} for t in texts])
    assert [r.status_code for r in responses] == [200] * 32
    assert [r.json()["length"] for r in responses] == list(range(32))
    assert max(r.json()["batch"] for r in responses) > 1


def batch_histogram(server: StratusServer, deployment: str, method: str) -> dict[str, float]:
    text = server.http.get("/metrics").text
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "stratus_batch_size":
            continue
        assert family.type == "histogram"
        for sample in family.samples:
            labels = sample.labels
            if labels.get("deployment") == deployment and labels.get("method") == method:
                assert labels["namespace"] == "default"
                key = sample.name + (f"@{labels['le']}" if "le" in labels else "")
                samples[key] = sample.value
    return samples


def test_batch_sizes_reach_the_histogram(deployed: StratusServer) -> None:
    invoke_all(deployed, SQUARES, [{"x": x} for x in range(32)])
    invoke_all(deployed, LENGTHS, [{"text": "abc"}] * 8)
    # Replicas report on their heartbeat (every second): wait for the counts to land.
    samples = wait_for(lambda: batch_histogram(deployed, SQUARES, "Squares.square"), 10,
                       "stratus_batch_size for Squares.square")
    count = samples["stratus_batch_size_count"]
    assert count == samples["stratus_batch_size_bucket@+Inf"] >= 1
    assert samples["stratus_batch_size_sum"] > count, "some batch held more than one item"
    assert samples["stratus_batch_size_bucket@16.0"] == count  # max_batch_size is 16
    lengths = wait_for(lambda: batch_histogram(deployed, LENGTHS, "Lengths.embed"), 10,
                       "stratus_batch_size for Lengths.embed")
    assert lengths["stratus_batch_size_count"] >= 1
