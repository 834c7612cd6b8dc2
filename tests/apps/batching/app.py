"""Batched handlers for the integration tests: sync and async, native JSON and v2 tensors."""

from __future__ import annotations

import asyncio
import itertools
import os
from typing import Any

import numpy as np

import stratus
from stratus.errors import BadRequest


@stratus.deployment(max_concurrency=64)
class Squares:
    """Squares ``x``. An item with ``poison`` fails alone (``reject``: alone, as a 400);
    ``explode`` fails its whole batch; ``short`` makes the batch answer one result too few."""

    def __init__(self, ctx: stratus.Context) -> None:
        self.batch_ids = itertools.count(1)
        self.pid = os.getpid()

    def __call__(self, request: dict[str, Any]) -> Any:
        return self.square(request)

    @stratus.batch(max_batch_size=16, max_wait_ms=20)
    def square(self, requests: list[dict[str, Any]]) -> list[Any]:
        batch_id = next(self.batch_ids)
        if any(r.get("explode") for r in requests):
            raise RuntimeError(f"batch {batch_id} failed as a whole")
        results: list[Any] = [
            ValueError(f"poisoned item {r['x']}") if r.get("poison")
            else BadRequest(f"x={r['x']} is out of range") if r.get("reject")
            else {"y": r["x"] ** 2, "batch": len(requests), "batch_id": batch_id, "pid": self.pid}
            for r in requests
        ]
        return results[:-1] if any(r.get("short") for r in requests) else results


@stratus.deployment(
    max_concurrency=64,
    inputs=[{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
    outputs=[{"name": "y", "datatype": "FP32", "shape": [-1, 4]},
             {"name": "batch", "datatype": "INT64", "shape": [1]}],
)
class Affine:
    """v2: ``y = 2x + 1``, computed once over the rows of every request in the batch."""

    def __init__(self, ctx: stratus.Context) -> None:
        pass

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result: dict[str, np.ndarray] = self.infer(inputs)
        return result

    @stratus.batch(max_batch_size=16, max_wait_ms=20)
    def infer(self, requests: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        rows = [request["x"] for request in requests]
        y = np.concatenate(rows) * 2 + 1
        size = np.array([len(requests)], dtype=np.int64)
        return [{"y": part, "batch": size} for part in np.split(y, np.cumsum([len(r) for r in rows])[:-1])]


@stratus.deployment(max_concurrency=64)
class Lengths:
    """Async: an embedding-like handler awaiting one batched call per request."""

    def __init__(self, ctx: stratus.Context) -> None:
        pass

    async def __call__(self, request: dict[str, Any]) -> Any:
        return await self.embed(request["text"])

    @stratus.batch(max_batch_size=16, max_wait_ms=20)
    async def embed(self, texts: list[str]) -> list[dict[str, int]]:
        await asyncio.sleep(0.005)  # the model's forward pass
        return [{"length": len(text), "batch": len(texts)} for text in texts]
