"""Tensor handlers for the gRPC tests: a mirror, a model that streams, and a slow one that
records being cancelled."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

import stratus


class Mirror:
    """Every input back as ``<name>_out``, and which revision answered."""

    def __init__(self, ctx: stratus.Context) -> None:
        self.revision = ctx.revision

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
        outputs: dict[str, Any] = {f"{name}_out": value for name, value in inputs.items()}
        outputs["revision"] = np.array([self.revision], dtype=np.int64)
        return outputs


class Countdown:
    """Streams ``n`` (an INT64 input) tensors: n-1, ..., 0."""

    def __init__(self, ctx: stratus.Context) -> None:
        pass

    async def __call__(self, inputs: dict[str, np.ndarray]) -> AsyncIterator[dict[str, Any]]:
        for left in reversed(range(int(inputs["n"][0]))):
            yield {"left": np.array([left], dtype=np.int64)}
            await asyncio.sleep(0.01)


class Sleeper:
    """Sleeps ``seconds`` (FP32), writing ``<marker>.cancelled`` in the config's marker_dir if
    it is cancelled first, and ``<marker>.started`` when it begins."""

    def __init__(self, ctx: stratus.Context) -> None:
        self.marker_dir = str(ctx.config.get("marker_dir", "."))

    async def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
        marker = bytes(inputs["marker"][0]).decode()
        self._touch(f"{marker}.started")
        try:
            await asyncio.sleep(float(inputs["seconds"][0]))
        except asyncio.CancelledError:
            self._touch(f"{marker}.cancelled")
            raise
        return {"slept": inputs["seconds"]}

    def _touch(self, name: str) -> None:
        with open(os.path.join(self.marker_dir, name), "w"):
            pass


class Faulty:
    """Raises, as a handler with a bug does."""

    def __init__(self, ctx: stratus.Context) -> None:
        pass

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
        raise ValueError("boom: the handler failed")
