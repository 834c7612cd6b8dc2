"""Ray Serve 2.60 peer for the cold-start benchmark (run with ``bench/.venv-ray/bin/python``).

Autoscaling from zero: ``min_replicas=0``, ``initial_replicas=0``, ``max_replicas=1`` and a
1 s delay before going back to zero, so every timed request starts a replica.

``metrics_interval_s`` (env ``BENCH_RAY_METRICS_INTERVAL_S``, default 0.5) matters: in Ray
2.60 the upscale from zero waited for the handle's next periodic metrics push, so with
Ray's default of 10 s a cold start took ~8 s instead of ~3 s on our 2-core box.

The replica's ``__init__`` imports torch and builds the same small MLP as
``bench/handlers/torch_init.py`` (torch is imported only inside ``__init__``, never by the
driver).
"""

from __future__ import annotations

import os
from typing import Any

from ray import serve
from ray_driver import QUIET_LOGGING, parse_args, serve_forever
from starlette.requests import Request

IDLE_SECONDS_BEFORE_ZERO = 1.0
METRICS_INTERVAL_S = float(os.environ.get("BENCH_RAY_METRICS_INTERVAL_S", "0.5"))


@serve.deployment(
    name="torch_init",
    max_ongoing_requests=8,
    logging_config=QUIET_LOGGING,
    autoscaling_config={
        "min_replicas": 0,
        "initial_replicas": 0,
        "max_replicas": 1,
        "target_ongoing_requests": 1,
        "upscale_delay_s": 0.0,
        "downscale_delay_s": IDLE_SECONDS_BEFORE_ZERO,
        "downscale_to_zero_delay_s": IDLE_SECONDS_BEFORE_ZERO,
        "look_back_period_s": IDLE_SECONDS_BEFORE_ZERO,
        "metrics_interval_s": METRICS_INTERVAL_S,
    },
)
class TorchInit:
    def __init__(self) -> None:
        import torch

        torch.manual_seed(0)
        self.torch = torch
        self.model = torch.nn.Sequential(
            torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 8)
        ).eval()
        with torch.inference_mode():
            self.model(torch.zeros(1, 64))

    async def __call__(self, request: Request) -> dict[str, Any]:
        payload = await request.json()
        value = float(payload.get("x", 0.0)) if isinstance(payload, dict) else 0.0
        with self.torch.inference_mode():
            out = self.model(self.torch.full((1, 64), value))
        return {"ok": True, "y": out[0].tolist()}


def main() -> None:
    args = parse_args(__doc__ or "")
    serve_forever(TorchInit.bind(), app_name="torch_init", deployment_name="torch_init", args=args)


if __name__ == "__main__":
    main()
