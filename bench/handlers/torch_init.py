"""Stratus cold-start handler for ``bench/coldstart.py``.

``__init__`` imports torch (only there, so each new replica pays for it), builds a small
2-layer MLP and runs one forward pass. Keep the model identical to the Ray peer in
``bench/peers/ray_coldstart.py`` so both systems do the same work.
"""

from __future__ import annotations

from typing import Any

import stratus


@stratus.deployment(name="torch-init")
class TorchInit:
    def __init__(self, ctx: stratus.Context) -> None:
        import torch

        torch.manual_seed(0)
        self.torch = torch
        self.model = torch.nn.Sequential(
            torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 8)
        ).eval()
        with torch.inference_mode():
            self.model(torch.zeros(1, 64))

    def __call__(self, request: Any) -> dict[str, Any]:
        value = float(request.get("x", 0.0)) if isinstance(request, dict) else 0.0
        with self.torch.inference_mode():
            out = self.model(self.torch.full((1, 64), value))
        return {"ok": True, "y": out[0].tolist()}
