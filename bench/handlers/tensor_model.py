"""The large-tensor model of ``bench/grpc.py``, shared by the Stratus handler
(``tensor_mean.py``) and the MLServer peer (``bench/peers/mlserver_models.py``).

It takes a batch of images, FP32 ``[N, 3, 224, 224]`` (64 of them: 38.5 MB), and returns one
FP32 mean per image: a few milliseconds of work, so a request's time is the tensor's transport.
"""

from __future__ import annotations

import numpy as np

INPUT = "images"
OUTPUT = "mean"
IMAGE_SHAPE = (3, 224, 224)


def per_image_mean(images: np.ndarray) -> np.ndarray:
    """FP32 ``[N]``: the mean of each image of an ``[N, 3, 224, 224]`` batch."""
    batch = np.asarray(images, dtype=np.float32)
    return batch.reshape(batch.shape[0], -1).mean(axis=1, dtype=np.float32)
