"""Raw operations per second of the queue backends (no server, no HTTP): enqueue, claim and
finish on SQLite (WAL), PostgreSQL and Redis, alone (concurrency 1: latency) and concurrent.

    .venv/bin/python bench/queue_ops.py [--count 5000] [--concurrency 64] [--only sqlite,redis]

PostgreSQL gets a scratch database (dropped after); Redis a scratch key prefix (deleted after).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from stratus.queue.base import InvocationQueue
from stratus.queue.records import NewInvocation, Status
from stratus.queue.redis import RedisQueue
from stratus.queue.sql import SqlQueue
from stratus.store.db import make_engine, migrate, sqlite_url

POSTGRES = os.environ.get("STRATUS_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432")
REDIS = os.environ.get("STRATUS_BENCH_REDIS", "redis://127.0.0.1:6379/0")
PAYLOAD = b'{"x": 1}'


@contextlib.contextmanager
def _postgres() -> Iterator[str]:
    import psycopg

    admin = psycopg.connect(POSTGRES.replace("postgresql+psycopg", "postgresql") + "/postgres",
                            autocommit=True)
    name = f"stratus_bench_{os.getpid()}"
    admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{POSTGRES}/{name}"
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@contextlib.asynccontextmanager
async def open_backend(name: str) -> AsyncIterator[InvocationQueue]:
    if name == "redis":
        prefix = f"stratus-bench-{uuid.uuid4().hex[:8]}"
        queue: InvocationQueue = RedisQueue(REDIS, prefix=prefix)
        await queue.open()
        try:
            yield queue
        finally:
            await queue.close()
            import redis.asyncio as aioredis

            client = aioredis.from_url(REDIS)
            keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
            if keys:
                await client.delete(*keys)
            await client.aclose()
        return
    with contextlib.ExitStack() as stack:
        if name == "sqlite":
            url = sqlite_url(Path(stack.enter_context(tempfile.TemporaryDirectory())))
        else:
            url = stack.enter_context(_postgres())
        engine = make_engine(url)
        migrate(engine)
        queue = SqlQueue(engine)
        await queue.open()
        try:
            yield queue
        finally:
            await queue.close()
            engine.dispose()


def _new() -> NewInvocation:
    return NewInvocation(id=uuid.uuid4().hex, namespace="bench", deployment="noop",
                         payload=PAYLOAD, max_attempts=3, expires_at=time.time() + 3600)


async def _timed(ops: list[Callable[[], Awaitable[Any]]], concurrency: int) -> dict[str, float]:
    """Runs ``ops`` with ``concurrency`` of them in flight; ops/s and latency percentiles."""
    latencies: list[float] = []
    pending = iter(ops)

    async def lane() -> None:
        for op in pending:
            start = time.perf_counter()
            await op()
            latencies.append(time.perf_counter() - start)

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    # The CPU this process spent per operation (SQLite's work included, Redis's and
    # PostgreSQL's not): steadier than ops/s on a machine other work is running on.
    return {"ops_s": len(ops) / elapsed, "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
            "cpu_us": 1e6 * (time.process_time() - cpu) / len(ops)}


async def run(name: str, count: int, concurrency: int, batch: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with open_backend(name) as queue:
        for lanes in (1, concurrency):
            n = count if lanes > 1 else max(200, count // 10)
            out[f"enqueue@{lanes}"] = await _timed(
                [lambda: queue.enqueue(_new(), time.time()) for _ in range(n)], lanes)
            held: list[tuple[str, str]] = []  # (owner, id), as a worker knows them

            def claim(owner: str, held: list[tuple[str, str]] = held
                      ) -> Callable[[], Awaitable[None]]:
                async def op() -> None:
                    got = await queue.claim(owner, "bench", "noop", batch, time.time(), 60)
                    held.extend((owner, record.id) for record in got)
                return op

            figure = await _timed([claim(f"w{i}") for i in range(n // batch)], lanes)
            out[f"claim{batch}@{lanes}"] = {**figure, "invocations_s": figure["ops_s"] * batch}

            def finish(owner: str, invocation_id: str) -> Callable[[], Awaitable[Any]]:
                return lambda: queue.finish(owner, invocation_id, Status.SUCCEEDED, time.time(),
                                            result=b"{}")

            out[f"finish@{lanes}"] = await _timed([finish(*pair) for pair in held], lanes)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16, help="invocations per claim")
    parser.add_argument("--only", default="sqlite,postgres,redis")
    args = parser.parse_args()
    print("| backend | operation | ops/s | p50 ms | p99 ms | client CPU µs/op |")
    print("|---|---|---:|---:|---:|---:|")
    for name in args.only.split(","):
        figures = asyncio.run(run(name, args.count, args.concurrency, args.batch))
        for op, figure in figures.items():
            extra = (f" ({figure['invocations_s']:.0f} invocations/s)"
                     if "invocations_s" in figure else "")
            print(f"| {name} | {op} | {figure['ops_s']:.0f}{extra} | {figure['p50_ms']:.2f} "
                  f"| {figure['p99_ms']:.2f} | {figure['cpu_us']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
