"""Stratus async invocations from the client side: submit, poll, list (aiohttp, one event loop).

aiohttp, not httpx: httpx 0.28's pool managed ~90 req/s at 32 concurrent connections on the
bench machine, where aiohttp and wrk did ~900, so httpx would have measured itself.

The API this drives (issue 16): ``POST /api/deployments/{name}/invoke?mode=async`` -> 202
``{"id", "status"}``; ``GET /api/invocations/{id}`` -> ``{"status", "result", ...}``;
``GET /api/invocations?deployment=&status=&limit=`` -> ``{"invocations": [...], "next_cursor"}``.
Every call lives in one small function here, so a drift in the API is one edit.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

NOOP = b'{"x": 1}'
CLOCK = b'{"clock": true}'
DONE = frozenset({"succeeded", "failed", "dead", "cancelled"})


class AsyncClient:
    """One keep-alive aiohttp session on a Stratus server, for one deployment."""

    def __init__(self, base_url: str, headers: dict[str, str], deployment: str, connections: int):
        self.http = aiohttp.ClientSession(
            base_url, connector=aiohttp.TCPConnector(limit=connections),
            timeout=aiohttp.ClientTimeout(total=60.0),
            headers={**headers, "Content-Type": "application/json"})
        self.deployment = deployment

    async def close(self) -> None:
        await self.http.close()

    async def _json(self, method: str, path: str, expect: int, **kwargs: Any) -> dict[str, Any]:
        async with self.http.request(method, path, **kwargs) as resp:
            body = await resp.read()
            if resp.status != expect:
                raise RuntimeError(f"{method} {path} -> {resp.status} {body[:300]!r}")
            return dict(json.loads(body))

    async def submit(self, body: bytes = NOOP) -> str:
        """One async invocation; returns its id once the server answered 202."""
        answer = await self._json("POST", f"/api/deployments/{self.deployment}/invoke", 202,
                                  params={"mode": "async"}, data=body)
        return str(answer["id"])

    async def status(self, invocation_id: str) -> dict[str, Any]:
        return await self._json("GET", f"/api/invocations/{invocation_id}", 200)

    async def wait(self, invocation_id: str, within_s: float = 120.0) -> dict[str, Any]:
        """Long-poll one invocation (``GET /api/invocations/{id}?wait=S``, answered when it
        ends) until it is terminal; raise unless it succeeded."""
        deadline = time.monotonic() + within_s
        while True:
            left = max(0.1, min(60.0, deadline - time.monotonic()))
            record = await self._json("GET", f"/api/invocations/{invocation_id}", 200,
                                      params={"wait": f"{left:.3f}"})
            if record["status"] in DONE:
                if record["status"] != "succeeded":
                    raise RuntimeError(f"invocation {invocation_id}: {json.dumps(record)[:500]}")
                return record
            if time.monotonic() > deadline:
                raise TimeoutError(f"invocation {invocation_id} still {record['status']}")

    async def listed(self, status: str, limit: int, cursor: str | None = None) -> dict[str, Any]:
        params = {"deployment": self.deployment, "status": status, "limit": str(limit)}
        if cursor:
            params["cursor"] = cursor
        return await self._json("GET", "/api/invocations", 200, params=params)

    async def count(self, status: str) -> int:
        """How many of the deployment's invocations are in ``status`` (walks every page)."""
        total, cursor = 0, None
        while True:
            page = await self.listed(status, 500, cursor)
            total += len(page["invocations"])
            cursor = page.get("next_cursor")
            if not cursor:
                return total

    async def drained(self) -> bool:
        """True once nothing of the deployment is queued or running (two one-item lists)."""
        for status in ("queued", "running"):
            if (await self.listed(status, 1))["invocations"]:
                return False
        return True


async def throughput(client: AsyncClient, n: int, concurrency: int, poll_s: float,
                     within_s: float) -> dict[str, Any]:
    """``n`` submissions from ``concurrency`` coroutines, then poll until none is pending."""
    await client.wait(await client.submit())  # connections and the path are warm
    before = await client.count("succeeded")
    errors: list[str] = []
    remaining = iter(range(n))

    async def submitter() -> int:
        accepted = 0
        for _ in remaining:
            try:
                await client.submit()
                accepted += 1
            except Exception as exc:  # count, keep going: a refused submission is a result too
                errors.append(f"{type(exc).__name__}: {exc}")
        return accepted

    began = time.time()
    accepted = sum(await asyncio.gather(*(submitter() for _ in range(concurrency))))
    enqueued = time.time()
    deadline = time.monotonic() + within_s
    while not await client.drained():
        if time.monotonic() > deadline:
            raise TimeoutError(f"backlog not drained after {within_s:g}s")
        await asyncio.sleep(poll_s)
    finished = time.time()
    succeeded = await client.count("succeeded") - before
    return {"n": n, "accepted": accepted, "enqueue_s": enqueued - began, "e2e_s": finished - began,
            "succeeded": succeeded, "failed": accepted - succeeded, "errors": errors[:5],
            "error_count": len(errors)}


async def latency(client: AsyncClient, n: int, gap_s: float, poll_s: float) -> dict[str, Any]:
    """``n`` invocations one at a time on an idle, warm deployment; the client long-polls each
    (``?wait=``), as Celery's waits on a Redis pub/sub channel."""
    await client.wait(await client.submit(CLOCK))
    samples: list[dict[str, float]] = []
    for _ in range(n):
        await asyncio.sleep(gap_s)
        sent = time.time()
        invocation_id = await client.submit(CLOCK)
        accepted = time.time()
        record = await client.wait(invocation_id)
        samples.append({"to_start": float(record["result"]["started"]) - sent,
                        "to_result": time.time() - sent, **path_of(record, sent, accepted)})
    return {"samples": samples}


def path_of(record: dict[str, Any], sent: float, accepted: float) -> dict[str, float]:
    """Where an idle invocation's time went, from the client's send (same host, same clock):
    stored, 202 seen by the client, claimed by the server's worker, finished."""
    return {"to_created": float(record["created_at"]) - sent, "to_202": accepted - sent,
            "to_claimed": float(record["started_at"]) - sent,
            "to_finished": float(record["finished_at"]) - sent}


async def first(client: AsyncClient, poll_s: float, within_s: float) -> dict[str, float]:
    """One async invocation on a deployment at zero replicas, to its result."""
    sent = time.time()
    record = await client.wait(await client.submit(CLOCK), within_s)
    done = time.time()
    return {"to_result_s": done - sent, "to_handler_start_s": float(record["result"]["started"]) - sent}


def run(coro_fn: Any, base_url: str, headers: dict[str, str], deployment: str, connections: int,
        *args: Any) -> Any:
    """Run ``coro_fn(client, *args)`` on a fresh client in a fresh event loop (uvloop if present)."""

    async def main() -> Any:
        client = AsyncClient(base_url, headers, deployment, connections)
        try:
            return await coro_fn(client, *args)
        finally:
            await client.close()

    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    return uvloop.run(main())
