"""The MLP of ``bench/batching.py``, shared by the Stratus handlers (``mlp.py``) and the Ray
Serve peer (``bench/peers/ray_mlp.py``), so every target computes the same numbers.

64 inputs -> ``depth`` hidden Linear layers ``width`` wide (ReLU) -> 16 outputs, seeded. No
Stratus import: the peer runs in Ray's own venv.
"""

from __future__ import annotations

from typing import Any

import torch

INPUTS, OUTPUTS = 64, 16


def build_mlp(width: int, depth: int) -> torch.nn.Module:
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = [torch.nn.Linear(INPUTS, width), torch.nn.ReLU()]
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.ReLU()]
    layers.append(torch.nn.Linear(width, OUTPUTS))
    return torch.nn.Sequential(*layers).eval()


def forward_rows(model: torch.nn.Module, rows: list[list[float]]) -> list[dict[str, Any]]:
    """One forward pass over a batch of rows; one ``{"y": [...]}`` per row."""
    with torch.inference_mode():
        out = model(torch.tensor(rows, dtype=torch.float32))
    return [{"y": y} for y in out.tolist()]
