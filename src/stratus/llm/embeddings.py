"""``EmbeddingServer``: sentence embeddings from a transformers encoder, batched across requests.

Each text is one call to a ``@batch``-ed method, so texts from concurrent requests share a
forward pass. Pooling is what sentence-transformers' all-MiniLM-L6-v2 does: the mean of the
last hidden states over the attention mask, then L2 normalisation.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from stratus.errors import BadRequest, ContextLengthExceeded
from stratus.llm.loading import load_pretrained
from stratus.sdk.batching import batch
from stratus.sdk.context import Context
from stratus.sdk.deployment import deployment

MAX_INPUTS = 2048


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` ``[B, T, H]`` over the positions where ``mask`` ``[B, T]`` is 1, L2-normalised."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * weights).sum(dim=1)
    pooled = summed / weights.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1)


# Concurrency well above the batch size, so a replica can fill a batch of 32.
@deployment(max_concurrency=128, target_concurrency=64, timeout_s=60, threads=os.cpu_count() or 1)
class EmbeddingServer:
    """Loads ``ctx.config["model"]`` with ``AutoModel`` and answers ``{"input": [...]}``."""

    def __init__(self, ctx: Context) -> None:
        self.tokenizer, self.model = load_pretrained(ctx, "AutoModel")
        config = self.model.config
        limits = [getattr(config, "max_position_embeddings", None), self.tokenizer.model_max_length]
        self.max_length = min(v for v in limits if isinstance(v, int) and 0 < v < 1_000_000)
        self.vocab_size = int(config.vocab_size)
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else 0
        # One thread runs the model, so the event loop stays free while a batch computes.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stratus-embed")

    def _ids(self, item: Any, index: int) -> list[int]:
        if isinstance(item, str):
            ids = list(self.tokenizer.encode(item))
        elif isinstance(item, list) and item and all(
                isinstance(t, int) and not isinstance(t, bool) for t in item):
            bad = next((t for t in item if not 0 <= t < self.vocab_size), None)
            if bad is not None:
                raise BadRequest(f"input[{index}] has token {bad}, outside the vocabulary "
                                 f"(0..{self.vocab_size - 1})")
            ids = list(item)
        else:
            raise BadRequest(f"input[{index}] must be a string or a non-empty list of token ids")
        if len(ids) > self.max_length:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {self.max_length} tokens. However, "
                f"input[{index}] has {len(ids)} tokens. Please reduce the length of the input.")
        return ids

    async def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        inputs = request.get("input") if isinstance(request, dict) else None
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            raise BadRequest("input must be a non-empty list of strings or of token id lists")
        if len(inputs) > MAX_INPUTS:
            raise BadRequest(f"at most {MAX_INPUTS} inputs per request, not {len(inputs)}")
        ids = [self._ids(item, i) for i, item in enumerate(inputs)]
        vectors = await asyncio.gather(*(self.embed(one) for one in ids))
        return {"data": list(vectors), "prompt_tokens": sum(len(one) for one in ids)}

    @batch(max_batch_size=32, max_wait_ms=5)
    async def embed(self, batch_ids: list[list[int]]) -> list[list[float]]:
        """Called with one token id list per caller; runs them as one padded batch."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._forward, batch_ids)

    def _forward(self, batch_ids: list[list[int]]) -> list[list[float]]:
        width = max(len(ids) for ids in batch_ids)
        input_ids = torch.full((len(batch_ids), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(batch_ids), width, dtype=torch.long)
        for row, ids in enumerate(batch_ids):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[row, : len(ids)] = 1
        with torch.inference_mode():
            hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
            pooled = mean_pool(hidden, mask)
        vectors: list[list[float]] = pooled.float().tolist()
        return vectors
