"""The digits CNN: two small convolutions over the 8x8 images of scikit-learn's digits set."""

from __future__ import annotations

import torch
from torch import nn


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3), nn.ReLU(),  # 8x8 -> 6x6
            nn.Conv2d(16, 32, kernel_size=3), nn.ReLU(),  # 6x6 -> 4x4
        )
        self.classifier = nn.Linear(32 * 4 * 4, 10)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels``: (batch, 64) with values in [0, 16], as in ``load_digits``."""
        images = pixels.reshape(-1, 1, 8, 8) / 16.0
        return self.classifier(self.features(images).flatten(1))
