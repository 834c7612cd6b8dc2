"""Ray Serve 2.60 peer for ``bench/batching.py`` (run with ``bench/.venv-ray/bin/python``).

The MLP of ``bench/handlers/mlp.py`` (same layers, same seed, so the same outputs) behind
``@serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)``: the settings of the Stratus
``BatchedMLP``. One replica, ``max_ongoing_requests`` 64 so 32 connections can all queue in
it, torch on ``BENCH_MLP_THREADS`` threads (the replica reserves as many CPUs).

Environment: ``BENCH_MLP_WIDTH`` (4096), ``BENCH_MLP_DEPTH`` (3), ``BENCH_MLP_THREADS`` (2).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch
from ray import cloudpickle, serve
from ray_driver import QUIET_LOGGING, parse_args, serve_forever
from starlette.requests import Request

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "handlers"))
import mlp_model
from mlp_model import build_mlp, forward_rows

# Ray's workers cannot import from bench/handlers: ship the module with the deployment.
cloudpickle.register_pickle_by_value(mlp_model)

WIDTH = int(os.environ.get("BENCH_MLP_WIDTH", "4096"))
DEPTH = int(os.environ.get("BENCH_MLP_DEPTH", "3"))
THREADS = int(os.environ.get("BENCH_MLP_THREADS", "2"))


@serve.deployment(
    name="mlp",
    num_replicas=1,
    max_ongoing_requests=64,
    ray_actor_options={"num_cpus": THREADS},
    logging_config=QUIET_LOGGING,
)
class BatchedMLP:
    def __init__(self) -> None:
        torch.set_num_threads(THREADS)
        self.model = build_mlp(WIDTH, DEPTH)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def forward(self, rows: list[list[float]]) -> list[dict[str, Any]]:
        return forward_rows(self.model, rows)

    async def __call__(self, request: Request) -> dict[str, Any]:
        body = await request.json()
        result: dict[str, Any] = await self.forward(body["x"])
        return result


def main() -> None:
    args = parse_args(__doc__ or "")
    serve_forever(BatchedMLP.bind(), app_name="mlp", deployment_name="mlp", args=args)


if __name__ == "__main__":
    main()
