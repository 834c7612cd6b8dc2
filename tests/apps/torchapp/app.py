"""A small torch model whose init imports torch and builds the network (the cold-start case)."""

from __future__ import annotations

import os
import sys
import threading
from typing import Any


class TinyNet:
    def __init__(self, ctx: Any) -> None:
        self.torch_was_preloaded = "torch" in sys.modules
        import torch  # preloaded in the zygote, so this costs nothing at cold start

        torch.manual_seed(0)
        self.torch = torch
        self.model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(),
                                         torch.nn.Linear(32, 4)).eval()
        with torch.inference_mode():
            self.model(torch.zeros(1, 16))  # first forward: starts torch's intra-op pool

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        torch = self.torch
        with torch.inference_mode():
            output = self.model(torch.tensor(request.get("x", [[0.0] * 16]), dtype=torch.float32))
        return {
            "y": output.tolist(),
            "torch_threads": torch.get_num_threads(),
            "process_threads": len(os.listdir("/proc/self/task")),
            "python_threads": threading.active_count(),
            "seed_probe": float(torch.rand(1)),
            "torch_was_preloaded": self.torch_was_preloaded,
        }
