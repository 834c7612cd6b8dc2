"""Stratus MLP handlers for ``bench/batching.py``: one torch MLP served per request (``MLP``)
and through ``@stratus.batch`` (``BatchedMLP``).

The model (``mlp_model.py``) is the one the Ray Serve peer serves too.
``ctx.config`` may set ``width`` (default 4096) and ``depth`` (default 3). At width 4096 the
weights are ~200 MB: one item's forward pass reads all of them for a few MFLOP, so it is
bound by memory bandwidth, and a batch reuses each weight it reads for every item.
"""

from __future__ import annotations

from typing import Any

from mlp_model import INPUTS, build_mlp, forward_rows

import stratus


class MLP:
    def __init__(self, ctx: stratus.Context) -> None:
        self.model = build_mlp(int(ctx.config.get("width", 4096)), int(ctx.config.get("depth", 3)))
        self.forward_batch([[0.0] * INPUTS])  # first-call allocations happen before timing

    def forward_batch(self, rows: list[list[float]]) -> list[dict[str, Any]]:
        return forward_rows(self.model, rows)

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.forward_batch([request["x"]])[0]


class BatchedMLP(MLP):
    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.forward(request["x"])
        return result

    @stratus.batch(max_batch_size=32, max_wait_ms=5)
    def forward(self, rows: list[list[float]]) -> list[dict[str, Any]]:
        return self.forward_batch(rows)
