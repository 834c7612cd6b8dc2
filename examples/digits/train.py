"""Trains the digits CNN in a few seconds on scikit-learn's bundled digits (no download) and
saves its weights as safetensors next to the model code."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from network import DigitsCNN
from safetensors.torch import save_file
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

WEIGHTS = Path(__file__).with_name("weights.safetensors")


def train(epochs: int = 15, seed: int = 0) -> float:
    """Train, save the weights, and return the accuracy on a held-out 20%."""
    torch.manual_seed(seed)
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=0.2, random_state=seed, stratify=digits.target
    )
    xs, ys = torch.tensor(x_train, dtype=torch.float32), torch.tensor(y_train)
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        for batch in torch.randperm(len(xs)).split(64):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xs[batch]), ys[batch])
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        predicted = model(torch.tensor(x_test, dtype=torch.float32)).argmax(1)
    save_file(model.state_dict(), WEIGHTS)
    return float((predicted == torch.tensor(y_test)).float().mean())


if __name__ == "__main__":
    started = time.perf_counter()
    accuracy = train()
    print(f"test accuracy {accuracy:.3f} in {time.perf_counter() - started:.1f}s -> {WEIGHTS}")
