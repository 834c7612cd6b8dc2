"""Sampling parameters (validated from a request) and the batched sampler.

The sampler works on the whole ``[batch, vocab]`` logits at once; the only per-row Python
work is drawing one uniform number from each sampled row's own generator, which is what makes
a seed reproduce the same output whatever else is in the batch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from stratus.errors import BadRequest

MAX_STOPS = 16


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int | None = None  # None: up to the context window
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    stop: tuple[str, ...] = ()
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @classmethod
    def from_request(cls, request: Mapping[str, Any]) -> SamplingParams:
        """Checks each field; raises ``BadRequest`` naming the first bad one."""
        max_tokens = request.get("max_tokens")
        if max_tokens is not None and (not _is_int(max_tokens) or max_tokens < 1):
            raise BadRequest(f"max_tokens must be a positive integer or null, not {max_tokens!r}")
        temperature = _number(request, "temperature", 1.0)
        if temperature < 0:
            raise BadRequest(f"temperature must be >= 0, not {temperature}")
        top_p = _number(request, "top_p", 1.0)
        if not 0 < top_p <= 1:
            raise BadRequest(f"top_p must be in (0, 1], not {top_p}")
        top_k = request.get("top_k")
        if top_k is None:
            top_k = 0
        if not _is_int(top_k) or top_k < 0:
            raise BadRequest(f"top_k must be a non-negative integer or null, not {top_k!r}")
        seed = request.get("seed")
        if seed is not None and not _is_int(seed):
            raise BadRequest(f"seed must be an integer or null, not {seed!r}")
        return cls(max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                   stop=_stops(request.get("stop")), seed=seed)

    def generator(self) -> torch.Generator | None:
        """The row's random source: seeded when asked, else from the OS; none when greedy."""
        if self.greedy:
            return None
        generator = torch.Generator()
        if self.seed is None:
            generator.seed()
        else:
            generator.manual_seed(self.seed & 0xFFFF_FFFF_FFFF_FFFF)
        return generator


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(request: Mapping[str, Any], name: str, default: float) -> float:
    value = request.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadRequest(f"{name} must be a finite number, not {value!r}")
    return float(value)


def _stops(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
        raise BadRequest("stop must be a list of non-empty strings")
    if len(value) > MAX_STOPS:
        raise BadRequest(f"at most {MAX_STOPS} stop strings are allowed, not {len(value)}")
    return tuple(value)


@dataclass
class BatchParams:
    """The per-row sampling parameters of the running batch, as tensors aligned with its rows."""

    temperature: torch.Tensor  # float [B]
    top_p: torch.Tensor  # float [B]
    top_k: torch.Tensor  # long [B]
    generators: list[torch.Generator | None]

    @classmethod
    def build(cls, params: Sequence[SamplingParams],
              generators: Sequence[torch.Generator | None]) -> BatchParams:
        return cls(
            temperature=torch.tensor([p.temperature for p in params], dtype=torch.float32),
            top_p=torch.tensor([p.top_p for p in params], dtype=torch.float32),
            top_k=torch.tensor([p.top_k for p in params], dtype=torch.long),
            generators=list(generators),
        )

    def select(self, rows: Sequence[int]) -> BatchParams:
        index = torch.tensor(list(rows), dtype=torch.long)
        return BatchParams(self.temperature.index_select(0, index), self.top_p.index_select(0, index),
                           self.top_k.index_select(0, index), [self.generators[i] for i in rows])

    def concat(self, other: BatchParams) -> BatchParams:
        return BatchParams(torch.cat([self.temperature, other.temperature]),
                           torch.cat([self.top_p, other.top_p]), torch.cat([self.top_k, other.top_k]),
                           self.generators + other.generators)

    def set_row(self, row: int, params: SamplingParams | None, generator: torch.Generator | None) -> None:
        """Give ``row`` to a new sequence, or (``None``) make it a cheap greedy placeholder."""
        params = params or SamplingParams(temperature=0.0)
        self.temperature[row] = params.temperature
        self.top_p[row] = params.top_p
        self.top_k[row] = params.top_k
        self.generators[row] = generator

    @property
    def all_greedy(self) -> bool:
        return all(g is None for g in self.generators)


def sample(logits: torch.Tensor, params: BatchParams) -> torch.Tensor:
    """One token id per row of ``logits`` ``[B, V]``: argmax for greedy rows, else a draw from
    the temperature-scaled distribution restricted to its top-k and then its top-p nucleus."""
    tokens = logits.argmax(dim=-1)
    if params.all_greedy:
        return tokens
    rows = [i for i, g in enumerate(params.generators) if g is not None]
    index = torch.tensor(rows, dtype=torch.long)
    scores = logits.index_select(0, index).float() / params.temperature.index_select(0, index)[:, None]
    scores = _top_k(scores, params.top_k.index_select(0, index))
    scores = _top_p(scores, params.top_p.index_select(0, index))
    cdf = scores.softmax(dim=-1).cumsum(dim=-1)
    # Inverse-CDF sampling: the vocabulary order does not matter, so no sort is needed here.
    uniform = torch.cat([torch.rand(1, generator=params.generators[i]) for i in rows])
    targets = (uniform * cdf[:, -1]).unsqueeze(1)
    drawn = torch.searchsorted(cdf, targets, right=True).squeeze(1)
    tokens[index] = drawn.clamp(max=logits.shape[-1] - 1)
    return tokens


def _top_k(scores: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor:
    active = top_k > 0
    if not bool(active.any()):
        return scores
    k_max = min(int(top_k.max()), scores.shape[-1])
    kth = scores.topk(k_max, dim=-1).values.gather(1, (top_k.clamp(1, k_max) - 1)[:, None])
    kth = torch.where(active[:, None], kth, torch.full_like(kth, -math.inf))
    return scores.masked_fill(scores < kth, -math.inf)


def _top_p(scores: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    if not bool((top_p < 1).any()):
        return scores
    ordered, order = scores.sort(dim=-1, descending=True)
    probs = ordered.softmax(dim=-1)
    # Drop a token once the tokens ranked above it already reach top_p; the first always stays.
    drop = ((probs.cumsum(dim=-1) - probs) >= top_p[:, None]) & (top_p < 1)[:, None]
    ordered = ordered.masked_fill(drop, -math.inf)
    return torch.empty_like(scores).scatter_(1, order, ordered)
