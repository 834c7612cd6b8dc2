"""Stratus MLP handlers for ``bench/batching.py``: one torch MLP served per request (``MLP``)
and through ``@stratus.batch`` (``BatchedMLP``).

64 inputs -> ``depth`` hidden Linear layers ``width`` wide (ReLU) -> 16 outputs, seeded, so
every target computes the same numbers; keep it identical to ``bench/peers/ray_mlp.py``.
``ctx.config`` may set ``width`` (default 4096) and ``depth`` (default 3). At width 4096 the
weights are ~200 MB: one item's forward pass reads all of them for a few MFLOP, so it is
bound by memory bandwidth, and a batch reuses each weight it reads for every item.
"""

from __future__ import annotations

from typing import Any

import torch

import stratus

INPUTS, OUTPUTS = 64, 16


def build_mlp(width: int, depth: int) -> torch.nn.Module:
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = [torch.nn.Linear(INPUTS, width), torch.nn.ReLU()]
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.ReLU()]
    layers.append(torch.nn.Linear(width, OUTPUTS))
    return torch.nn.Sequential(*layers).eval()


class MLP:
    def __init__(self, ctx: stratus.Context) -> None:
        self.model = build_mlp(int(ctx.config.get("width", 4096)), int(ctx.config.get("depth", 3)))
        self.forward_batch([[0.0] * INPUTS])  # first-call allocations happen before timing

    def forward_batch(self, rows: list[list[float]]) -> list[dict[str, Any]]:
        with torch.inference_mode():
            out = self.model(torch.tensor(rows, dtype=torch.float32))
        return [{"y": y} for y in out.tolist()]

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.forward_batch([request["x"]])[0]


class BatchedMLP(MLP):
    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.forward(request["x"])
        return result

    @stratus.batch(max_batch_size=32, max_wait_ms=5)
    def forward(self, rows: list[list[float]]) -> list[dict[str, Any]]:
        return self.forward_batch(rows)
