"""Async invocations through a whole server whose queue is PostgreSQL (the metadata store) or
Redis Streams (``STRATUS_QUEUE_URL``), on the real services: the same behaviour as on SQLite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_async_invocations import FAST_RETRIES, attempts_of, enqueue, marker_dir, wait_done
from test_store import _postgres_database

from server import TEST_ENV, StratusServer

REDIS_DB = 11  # this test's own database on the machine's Redis, flushed before use


def _redis_url() -> str:
    redis = pytest.importorskip("redis")
    url = os.environ.get("STRATUS_TEST_REDIS", f"redis://127.0.0.1:6379/{REDIS_DB}")
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2)
        client.flushdb()
        client.close()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {url}: {exc}")
    return url


@pytest.fixture(params=["postgres", "redis"])
def backed_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StratusServer]:
    databases: Iterator[str] | None = None
    if request.param == "postgres":
        databases = _postgres_database()
        env = {**TEST_ENV, "STRATUS_DATABASE_URL": next(databases)}
    else:
        env = {**TEST_ENV, "STRATUS_QUEUE_URL": _redis_url()}
    instance = StratusServer(tmp_path / "data", env)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()
        for _ in databases or ():
            pass


def test_retries_dlq_and_idempotency_on_each_backend(backed_server: StratusServer,
                                                     tmp_path: Path) -> None:
    server = backed_server
    markers = marker_dir(tmp_path)
    server.deploy("asyncjobs", "app.py:flaky", name="backend-flaky",
                  config={"marker_dir": markers}, async_invocations=FAST_RETRIES)
    first = enqueue(server.http, "backend-flaky", {"fail_times": 2},
                    **{"idempotency-key": "k-1"}).json()["id"]
    view = wait_done(server, first)
    assert view["status"] == "succeeded" and view["attempts"] == 3
    assert len(attempts_of(markers, first)) == 3
    repeat = enqueue(server.http, "backend-flaky", {"fail_times": 2},
                     **{"idempotency-key": "k-1"})
    assert repeat.status_code == 200 and repeat.json()["id"] == first
    doomed = enqueue(server.http, "backend-flaky", {"fail_times": 99}).json()["id"]
    assert wait_done(server, doomed)["status"] == "dead"
    moved = server.http.post("/api/deployments/backend-flaky/dlq/redrive", json={}).json()
    assert moved["redriven"] == [doomed]
    assert wait_done(server, doomed)["status"] == "dead"
    assert len(attempts_of(markers, doomed)) == 6
