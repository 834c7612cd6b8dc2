"""Stratus handler for ``bench/models.py``: a model loaded through the model store.

``__init__`` gets the weights from ``ctx.load_model`` (memory-mapped from the store, zero
copy, so nothing is read until the forward pass touches it); ``__call__`` runs the forward
pass shared with the other targets (see ``bench/modelkit.py``) and returns the checksum,
plus the replica's pid and timings for the harness: durations, and ``CLOCK_MONOTONIC``
instants (the harness's clock too) at which ``__init__`` and the call began and ended, from
which the harness tells the start's steps apart. ``{"hold_s": s}`` in the request makes the
replica wait first, so concurrent requests spread over the replicas (memory runs).
"""

from __future__ import annotations

import os
import time
from typing import Any

import stratus

MODEL_NAME = "bench-weights"  # keep in sync with bench/models.py (MODEL_NAME)


@stratus.deployment(name="model-forward")
class ModelForward:
    def __init__(self, ctx: stratus.Context) -> None:
        self.init_at = time.monotonic()
        import torch

        self.torch = torch
        started = time.perf_counter()
        self.weights = ctx.load_model(MODEL_NAME)
        self.load_s = time.perf_counter() - started
        self.calls = 0
        self.init_end_at = time.monotonic()

    def __call__(self, request: Any) -> dict[str, Any]:
        called_at = time.monotonic()
        hold = float(request.get("hold_s", 0.0)) if isinstance(request, dict) else 0.0
        if hold > 0:
            time.sleep(hold)
        torch, weights = self.torch, self.weights
        started = time.perf_counter()
        x = torch.ones(1, next(iter(weights.values())).shape[0])
        with torch.inference_mode():
            for key in sorted(weights):
                x = torch.tanh(x @ weights[key])
        checksum = float(x.sum())
        self.calls += 1
        return {
            "checksum": checksum,
            "pid": os.getpid(),
            "threads": torch.get_num_threads(),
            "load_s": self.load_s,
            "forward_s": time.perf_counter() - started,
            "calls": self.calls,
            "init_at": self.init_at,
            "init_end_at": self.init_end_at,
            "called_at": called_at,
            "returned_at": time.monotonic(),
        }
