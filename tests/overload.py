"""Open-loop load for the shedding tests: requests sent at a fixed rate whatever the answers,
as overload comes in production, with each one's status, Retry-After and latency."""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass
from typing import Any

import httpx

from keepalive import Connections


@dataclass(frozen=True)
class Answer:
    status: int  # 0: the client gave up (its timeout) or the connection failed
    latency_s: float
    retry_after: str | None
    sent_at: float  # seconds from the start of the run
    late_s: float  # how far behind its time the client sent it: the client's own lag


@dataclass(frozen=True)
class Summary:
    sent: int
    ok: int
    refused: int  # 429 or 503
    other: int
    goodput: float  # answers 200 per second, until the last answer came
    p99_ok_s: float | None
    p50_ok_s: float | None
    max_refusal_s: float | None  # how long the slowest refusal took
    max_late_s: float  # the client's worst lag: large, and the load was not the rate asked


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q / 100 * len(ordered) + 0.5) - 1))]


async def drive(url: str, key: str, name: str, rate: float, duration_s: float,
                payload: dict[str, Any], headers: dict[str, str] | None = None,
                timeout_s: float = 30.0, path: str | None = None) -> list[Answer]:
    """``rate`` requests a second for ``duration_s``, each sent on time even while earlier
    ones wait, on keep-alive connections (``tests/keepalive.py``): enough of them for every
    request that may be pending at once, ``rate x timeout_s``. ``path`` defaults to the
    deployment's invoke route (a peer's, for ``bench/reliability.py``, is its own)."""
    count = int(rate * duration_s)
    connections = Connections(httpx.URL(url).port or 80, key,
                              size=min(count, math.ceil(rate * timeout_s)) + 1)
    body, path = json.dumps(payload).encode(), path or f"/api/deployments/{name}/invoke"
    answers: list[Answer] = []

    async def one(sent_at: float, late_s: float) -> None:
        start = time.monotonic()
        try:
            status, fields, _ = await connections.post(path, body, headers or {}, timeout_s)
            retry = fields.get("retry-after")
        except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError):
            status, retry = 0, None
        answers.append(Answer(status, time.monotonic() - start, retry, sent_at, late_s))

    begin = time.monotonic()
    tasks = []
    for i in range(count):
        # Always a yield, even when behind: the answers share this loop.
        await asyncio.sleep(max(0.0, begin + i / rate - time.monotonic()))
        tasks.append(asyncio.create_task(one(i / rate, time.monotonic() - begin - i / rate)))
    await asyncio.gather(*tasks)
    connections.close()
    return answers


def summarise(answers: list[Answer], duration_s: float) -> Summary:
    ok = [a.latency_s for a in answers if a.status == 200]
    refusals = [a.latency_s for a in answers if a.status in (429, 503)]
    return Summary(
        sent=len(answers), ok=len(ok), refused=len(refusals),
        other=len(answers) - len(ok) - len(refusals),
        goodput=len(ok) / max([duration_s, *(a.sent_at + a.latency_s for a in answers)]),
        p99_ok_s=percentile(ok, 99), p50_ok_s=percentile(ok, 50),
        max_refusal_s=max(refusals) if refusals else None,
        max_late_s=max((a.late_s for a in answers), default=0.0),
    )
