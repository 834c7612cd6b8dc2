"""Handlers that yield: items stream to the client as they are made, and a client that leaves
stops the handler."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from server import StratusServer, searchable_above, wait_for

NDJSON = {"accept": "application/x-ndjson"}


def _lines(response: httpx.Response) -> list[dict[str, object]]:
    return [json.loads(line) for line in response.text.splitlines() if line]


def test_async_generator_streams_ndjson(server: StratusServer) -> None:
    server.deploy("basic", "app.py:Counter", name="st-count", max_concurrency=16)
    response = server.invoke("st-count", {"n": 4}, headers=NDJSON)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert response.headers["x-stratus-revision"] == "1"
    assert response.headers["x-stratus-cold-start"] == "true"  # the first request started it
    assert response.headers["x-request-id"]
    assert _lines(response) == [{"index": i} for i in range(4)]
    again = server.invoke("st-count", {"n": 1}, headers=NDJSON)
    assert again.headers["x-stratus-cold-start"] == "false"


def test_items_arrive_before_the_handler_finishes(server: StratusServer) -> None:
    server.deploy("basic", "app.py:Counter", name="st-live", max_concurrency=16)
    payload = {"n": 3, "pause": 30}  # the handler would run for 90 s
    with server.http.stream("POST", "/api/deployments/st-live/invoke", json=payload,
                            headers=NDJSON, timeout=20) as response:
        assert response.status_code == 200
        first = next(response.iter_lines())
    assert json.loads(first) == {"index": 0}


def test_without_accept_the_items_come_back_as_a_list(server: StratusServer) -> None:
    server.deploy("basic", "app.py:SyncCounter", name="st-sync", max_concurrency=4)
    response = server.invoke("st-sync", {"n": 3})
    assert response.status_code == 200, response.text
    assert response.json() == [{"index": i, "square": i * i} for i in range(3)]
    streamed = server.invoke("st-sync", {"n": 2}, headers=NDJSON)
    assert _lines(streamed) == [{"index": 0, "square": 0}, {"index": 1, "square": 1}]


def test_error_mid_stream_ends_with_an_error_line(server: StratusServer) -> None:
    server.deploy("basic", "app.py:Counter", name="st-fail", max_concurrency=4)
    response = server.invoke("st-fail", {"n": 5, "fail_at": 2}, headers=NDJSON)
    lines = _lines(response)
    assert lines[:2] == [{"index": 0}, {"index": 1}]
    error = lines[2]["error"]
    assert isinstance(error, dict)
    assert error["type"] == "handler_error"
    assert "failed at item 2" in str(error["message"])
    # Buffered, the failure is the response's status.
    buffered = server.invoke("st-fail", {"n": 5, "fail_at": 0})
    assert buffered.status_code == 500
    assert buffered.json()["error"]["type"] == "handler_error"
    assert server.invoke("st-fail", {"n": 1}).status_code == 200


def test_a_client_that_leaves_stops_the_handler_and_frees_its_slot(
    server: StratusServer, tmp_path: Path
) -> None:
    tmp_path.chmod(0o777)  # the replica, its namespace's user, writes its markers here
    searchable_above(tmp_path)
    server.deploy("basic", "app.py:Counter", name="st-cancel", max_concurrency=1,
                  max_replicas=1, config={"marker_dir": str(tmp_path)})
    payload = {"n": 1000, "pause": 0.05, "marker": "long"}
    with server.http.stream("POST", "/api/deployments/st-cancel/invoke", json=payload,
                            headers=NDJSON, timeout=20) as response:
        lines = response.iter_lines()
        assert json.loads(next(lines)) == {"index": 0}
    # The only slot is free again: a new request is served by the same single replica.
    quick = server.invoke("st-cancel", {"n": 1, "marker": "quick"}, timeout=30)
    assert quick.status_code == 200, quick.text
    wait_for(lambda: (tmp_path / "quick.done").exists() or None, 10, "the quick stream")
    assert not (tmp_path / "long.done").exists()
