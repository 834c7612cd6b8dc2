"""Stratus handlers for ``bench/soak.py``: a JSON echo, a streamed counter and a v2 tensor sum,
each small, so the soak measures the platform's own resources rather than a model's."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

import stratus


@stratus.deployment(name="soak-echo")
class Echo:
    def __init__(self, ctx: stratus.Context) -> None:
        self.version = str(ctx.config.get("version", "1"))

    def __call__(self, request: Any) -> dict[str, Any]:
        return {"echo": request, "version": self.version}


@stratus.deployment(name="soak-stream")
class Counter:
    def __init__(self, ctx: stratus.Context) -> None:
        pass

    def __call__(self, request: dict[str, Any]) -> Iterator[dict[str, int]]:
        for index in range(int(request.get("n", 8))):
            yield {"index": index}


@stratus.deployment(
    name="soak-tensor",
    inputs=[{"name": "x", "datatype": "FP32", "shape": [-1, 256]}],
    outputs=[{"name": "sum", "datatype": "FP32", "shape": [-1]}],
)
class RowSum:
    def __init__(self, ctx: stratus.Context) -> None:
        pass

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"sum": inputs["x"].sum(axis=1)}
