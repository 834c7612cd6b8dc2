"""The digits classifier as a Stratus deployment.

Native route: ``{"pixels": [[64 values 0..16], ...]}`` -> ``{"digits": [...], "probabilities": [...]}``.
v2 route: input ``pixels`` FP32 [N, 64] -> outputs ``digit`` INT64 [N] and ``probabilities`` FP32 [N, 10].
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from network import DigitsCNN
from safetensors.torch import load_file

import stratus


@stratus.deployment(
    name="digits",
    max_concurrency=4,
    inputs=[{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}],
    outputs=[
        {"name": "digit", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
    ],
)
class Digits:
    def __init__(self, ctx: stratus.Context) -> None:
        # Runs once per replica: the cold-start work is loading 20 KB of weights.
        self.model = DigitsCNN()
        self.model.load_state_dict(load_file(Path(__file__).with_name("weights.safetensors")))
        self.model.eval()
        ctx.logger.info("digits model loaded")

    def _predict(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            logits = self.model(torch.from_numpy(np.asarray(pixels, dtype=np.float32)))
            probabilities = torch.softmax(logits, dim=1)
        return probabilities.argmax(1).numpy(), probabilities.numpy()

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        pixels = request["pixels"]
        digits, probabilities = self._predict(pixels)
        if isinstance(pixels, np.ndarray):  # v2: tensors in, tensors out
            return {"digit": digits.astype(np.int64), "probabilities": probabilities}
        return {"digits": digits.tolist(), "probabilities": probabilities.astype(float).round(4).tolist()}
