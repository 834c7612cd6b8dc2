"""Seldon MLServer runtimes for ``bench/grpc.py`` (run in ``bench/.venv-mlserver``): the same
two models Stratus serves, written as a user writes an ``mlserver.MLModel``.

* ``DigitsRuntime``: ``examples/digits`` (its ``network.DigitsCNN`` and trained
  ``weights.safetensors``, the model's ``parameters.uri``), input ``pixels`` FP32 ``[N, 64]``
  -> ``digit`` INT64 ``[N]`` and ``probabilities`` FP32 ``[N, 10]``, as ``model.py`` answers
  on Stratus's v2 route;
* ``TensorMeanRuntime``: ``bench/handlers/tensor_model.py``'s per-image mean.

``PYTHONPATH`` must hold ``examples/digits`` and ``bench/handlers`` (``grpc_targets.py`` sets it).
"""

from __future__ import annotations

import numpy as np
import torch
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from network import DigitsCNN
from safetensors.torch import load_file
from tensor_model import INPUT, OUTPUT, per_image_mean


def _input(payload: InferenceRequest, name: str) -> np.ndarray:
    for request_input in payload.inputs:
        if request_input.name == name:
            return NumpyCodec.decode_input(request_input)
    raise ValueError(f"input {name!r} is missing")


class DigitsRuntime(MLModel):
    async def load(self) -> bool:
        torch.set_num_threads(1)  # as the Stratus replica (--threads 1)
        uri = self.settings.parameters.uri if self.settings.parameters else None
        if not uri:
            raise ValueError("model-settings.json needs parameters.uri: the weights file")
        self.model = DigitsCNN()
        self.model.load_state_dict(load_file(uri))
        self.model.eval()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        pixels = _input(payload, "pixels").astype(np.float32, copy=False)
        with torch.inference_mode():
            probabilities = torch.softmax(self.model(torch.from_numpy(pixels)), dim=1)
        digits = probabilities.argmax(1).numpy().astype(np.int64)
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                NumpyCodec.encode_output("digit", digits),
                NumpyCodec.encode_output("probabilities", probabilities.numpy()),
            ],
        )


class TensorMeanRuntime(MLModel):
    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        means = per_image_mean(_input(payload, INPUT))
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output(OUTPUT, means)])
