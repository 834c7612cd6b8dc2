"""Handlers that load models from the registry with ctx.load_model, one per format, and report
values derived from the weights (so a test can tell which version is served)."""

from __future__ import annotations

import os
import time
from typing import Any

import stratus


def _mapped_ranges(paths: list[str]) -> list[tuple[int, int]]:
    """Address ranges of this process's mappings of ``paths`` (the blobs behind a model)."""
    targets = {os.path.realpath(path) for path in paths}
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and fields[5] in targets:
                low, high = (int(part, 16) for part in fields[0].split("-"))
                ranges.append((low, high))
    return ranges


def _zero_copy(ctx: stratus.Context, name: str, pointers: list[int]) -> bool:
    directory = ctx.model_path(name)
    files = [os.path.join(directory, f) for f in os.listdir(directory) if f.endswith(".safetensors")]
    ranges = _mapped_ranges(files)
    return bool(pointers) and all(any(lo <= p < hi for lo, hi in ranges) for p in pointers)


class TensorSums:
    """A safetensors model as a dict of tensors: answers each tensor's sum."""

    def __init__(self, ctx: stratus.Context) -> None:
        import torch

        self.torch = torch
        self.ctx = ctx
        self.name = ctx.config.get("model") or ctx.env.get("MODEL", "weights")
        self.tensors = ctx.load_model(self.name)
        self.info = ctx.model_info(self.name)
        pointers = [t.data_ptr() for t in self.tensors.values() if t.numel()]
        self.zero_copy = _zero_copy(ctx, self.name, pointers)

    def __call__(self, request: Any) -> dict[str, Any]:
        torch = self.torch
        return {
            "sums": {key: float(value.sum(dtype=torch.float64))
                     for key, value in sorted(self.tensors.items())},
            "version": self.info["version"],
            "format": self.info["format"],
            "meta": self.info["meta"],
            "revision": self.ctx.revision,
            "pid": os.getpid(),
            "zero_copy": self.zero_copy,
            "files": sorted(os.listdir(self.ctx.model_path(self.name))),
        }


class ModuleNet:
    """A safetensors model loaded into a torch module defined here (module=)."""

    def __init__(self, ctx: stratus.Context) -> None:
        import torch

        class TinyNet(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.hidden = torch.nn.Linear(4, 8)
                self.out = torch.nn.Linear(8, 2)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.out(torch.relu(self.hidden(x)))

        self.torch = torch
        name = ctx.config.get("model", "net")
        self.model = ctx.load_model(name, module=TinyNet)
        pointers = [p.data_ptr() for p in self.model.parameters()]
        self.zero_copy = _zero_copy(ctx, name, pointers)
        self.devices = sorted({p.device.type for p in self.model.parameters()})

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        torch = self.torch
        with torch.inference_mode():
            y = self.model(torch.tensor(request["x"], dtype=torch.float32))
        return {"y": y.tolist(), "zero_copy": self.zero_copy, "devices": self.devices,
                "type": type(self.model).__name__}


class HFModel:
    """A transformers model (config + safetensors) from the registry."""

    def __init__(self, ctx: stratus.Context) -> None:
        import torch

        self.torch = torch
        name = ctx.config.get("model", "tiny-gpt2")
        self.model = ctx.load_model(name)
        self.files = sorted(os.listdir(ctx.model_path(name)))

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        torch = self.torch
        with torch.inference_mode():
            logits = self.model(torch.tensor(request["input_ids"])).logits
        return {"logits": logits[0, -1, :5].tolist(), "class": type(self.model).__name__,
                "files": self.files, "training": self.model.training}


class OnnxModel:
    def __init__(self, ctx: stratus.Context) -> None:
        self.session = ctx.load_model(ctx.config.get("model", "affine"))

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        (y,) = self.session.run(None, {"x": np.asarray(request["x"], dtype=np.float32)})
        return {"y": y.tolist(), "class": type(self.session).__name__}


class PickleModel:
    def __init__(self, ctx: stratus.Context) -> None:
        self.model = ctx.load_model(ctx.config.get("model", "iris"))

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"y": self.model.predict(request["x"]).tolist(), "class": type(self.model).__name__}


class SharedWeights:
    """Touches every weight at init, so each replica has all of the model resident."""

    def __init__(self, ctx: stratus.Context) -> None:
        name = ctx.config.get("model", "big")
        self.tensors = ctx.load_model(name)
        self.total = sum(float(t.sum()) for t in self.tensors.values())  # no copy of the weights
        self.blobs = [os.path.realpath(os.path.join(ctx.model_path(name), f))
                      for f in os.listdir(ctx.model_path(name))]

    def __call__(self, request: Any) -> dict[str, Any]:
        return {"pid": os.getpid(), "total": self.total, "blobs": self.blobs}


class Hungry:
    """Takes ``alloc_mb`` of its own memory at init; sleeps on request if asked."""

    def __init__(self, ctx: stratus.Context) -> None:
        self.ballast = bytearray(int(ctx.config.get("alloc_mb", 0)) * 2**20)
        for offset in range(0, len(self.ballast), 4096):
            self.ballast[offset] = 1

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("sleep"):
            time.sleep(float(request["sleep"]))
        return {"pid": os.getpid()}
