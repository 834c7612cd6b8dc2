"""Stratus handler for ``bench/grpc.py``'s large batch: v2 input ``images`` FP32
``[N, 3, 224, 224]`` -> output ``mean`` FP32 ``[N]`` (``tensor_model.py``, which the MLServer
peer serves too)."""

from __future__ import annotations

from typing import Any

from tensor_model import IMAGE_SHAPE, INPUT, OUTPUT, per_image_mean

import stratus


@stratus.deployment(
    name="tensor-mean",
    inputs=[{"name": INPUT, "datatype": "FP32", "shape": [-1, *IMAGE_SHAPE]}],
    outputs=[{"name": OUTPUT, "datatype": "FP32", "shape": [-1]}],
)
class TensorMean:
    def __init__(self, ctx: stratus.Context) -> None:
        pass

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        return {OUTPUT: per_image_mean(request[INPUT])}
