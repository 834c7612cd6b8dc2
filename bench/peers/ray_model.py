"""Ray Serve 2.60 peer for ``bench/models.py`` (run with ``bench/.venv-ray/bin/python``).

The replica's constructor imports torch and does ``torch.load(BENCH_MODEL_PT,
weights_only=True)`` (a private copy of the weights in every replica); ``__call__`` runs the
forward pass shared with the other targets (see ``bench/modelkit.py``) and returns the
checksum, the replica's pid and timings. ``{"hold_s": s}`` makes it wait first, so
concurrent requests spread over the replicas.

Environment:

* ``BENCH_MODEL_PT``: the ``.pt`` file (required);
* ``BENCH_RAY_REPLICAS``: ``0`` (default) autoscales from zero like ``ray_coldstart.py``
  (``min_replicas=0``, ``initial_replicas=0``, ``max_replicas=1``, back to zero after 1 s);
  ``N > 0`` runs exactly N replicas;
* ``BENCH_RAY_REPLICA_CPUS``: the replicas' ``num_cpus`` (default 1: Serve's own default);
* ``BENCH_RAY_METRICS_INTERVAL_S``: autoscaling ``metrics_interval_s`` (default 0.5).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from ray import serve
from ray_driver import QUIET_LOGGING, parse_args, serve_forever
from starlette.requests import Request

MODEL_PT = os.environ.get("BENCH_MODEL_PT", "")
REPLICAS = int(os.environ.get("BENCH_RAY_REPLICAS", "0"))
REPLICA_CPUS = float(os.environ.get("BENCH_RAY_REPLICA_CPUS", "1"))
IDLE_SECONDS_BEFORE_ZERO = 1.0
METRICS_INTERVAL_S = float(os.environ.get("BENCH_RAY_METRICS_INTERVAL_S", "0.5"))
AUTOSCALE_FROM_ZERO = {
    "min_replicas": 0,
    "initial_replicas": 0,
    "max_replicas": 1,
    "target_ongoing_requests": 1,
    "upscale_delay_s": 0.0,
    "downscale_delay_s": IDLE_SECONDS_BEFORE_ZERO,
    "downscale_to_zero_delay_s": IDLE_SECONDS_BEFORE_ZERO,
    "look_back_period_s": IDLE_SECONDS_BEFORE_ZERO,
    "metrics_interval_s": METRICS_INTERVAL_S,
}


@serve.deployment(name="model", max_ongoing_requests=8, logging_config=QUIET_LOGGING)
class Model:
    def __init__(self, path: str) -> None:
        started = time.perf_counter()
        import torch

        imported = time.perf_counter()
        self.torch = torch
        self.weights = torch.load(path, weights_only=True)
        self.import_s = imported - started
        self.load_s = time.perf_counter() - imported
        self.calls = 0

    async def __call__(self, request: Request) -> dict[str, Any]:
        payload = await request.json()
        hold = float(payload.get("hold_s", 0.0)) if isinstance(payload, dict) else 0.0
        if hold > 0:
            await asyncio.sleep(hold)
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
            "import_s": self.import_s,
            "load_s": self.load_s,
            "forward_s": time.perf_counter() - started,
            "calls": self.calls,
        }


def main() -> None:
    args = parse_args(__doc__ or "")
    if not MODEL_PT:
        raise SystemExit("BENCH_MODEL_PT is not set")
    actor_options = {"num_cpus": REPLICA_CPUS}
    if REPLICAS > 0:
        deployment = Model.options(num_replicas=REPLICAS, ray_actor_options=actor_options)
    else:
        deployment = Model.options(autoscaling_config=AUTOSCALE_FROM_ZERO, ray_actor_options=actor_options)
    serve_forever(deployment.bind(MODEL_PT), app_name="model", deployment_name="model", args=args)


if __name__ == "__main__":
    main()
