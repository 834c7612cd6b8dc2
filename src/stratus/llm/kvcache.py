"""The running batch's KV cache: one left-padded ``[batch, heads, tokens, head_dim]`` buffer per layer.

It is a transformers ``Cache``, so the model's attention layers write into it as usual. Unlike
``DynamicCache`` it grows in chunks instead of re-concatenating on every token, and it can drop
rows, reuse a row for a new sequence, merge in a freshly prefilled batch, and trim columns
that have become all padding. Only dropping and merging copy the whole cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer

# Capacity is allocated in multiples of this many tokens: a copy every CHUNK decode steps at most.
CHUNK = 64


def _round_up(n: int) -> int:
    return (n + CHUNK - 1) // CHUNK * CHUNK + CHUNK


class BatchLayer(DynamicLayer):  # type: ignore[no-untyped-call]
    """One layer's keys and values; the live window is ``buffer[:, :, start:end]``."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.k_buf = torch.empty(0)
        self.v_buf = torch.empty(0)
        self.start = 0
        self.end = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        batch, heads, tokens, dim = key_states.shape
        v_dim = value_states.shape[-1]
        # Zeros, not empty: padding columns must hold finite values, since masked weights are 0
        # and 0 * NaN would still poison the attention output.
        self.k_buf = torch.zeros(batch, heads, _round_up(tokens), dim, dtype=self.dtype)
        self.v_buf = torch.zeros(batch, heads, _round_up(tokens), v_dim, dtype=self.dtype)
        self.start = self.end = 0
        self.is_initialized = True

    def _refresh(self) -> None:
        self.keys = self.k_buf[:, :, self.start : self.end]
        self.values = self.v_buf[:, :, self.start : self.end]

    def _reallocate(self, capacity: int) -> None:
        """Move the live window to the front of fresh buffers with room for ``capacity`` tokens."""
        live = self.end - self.start
        k = self.k_buf.new_zeros(*self.k_buf.shape[:2], capacity, self.k_buf.shape[-1])
        v = self.v_buf.new_zeros(*self.v_buf.shape[:2], capacity, self.v_buf.shape[-1])
        k[:, :, :live] = self.k_buf[:, :, self.start : self.end]
        v[:, :, :live] = self.v_buf[:, :, self.start : self.end]
        self.k_buf, self.v_buf, self.start, self.end = k, v, 0, live

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        tokens = key_states.shape[-2]
        if self.end + tokens > self.k_buf.shape[2]:
            self._reallocate(_round_up(self.end - self.start + tokens))
        self.k_buf[:, :, self.end : self.end + tokens] = key_states
        self.v_buf[:, :, self.end : self.end + tokens] = value_states
        self.end += tokens
        self._refresh()
        return self.k_buf[:, :, self.start : self.end], self.v_buf[:, :, self.start : self.end]

    def get_seq_length(self) -> int:
        return self.end - self.start

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.end - self.start + query_length, 0

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self.k_buf = self.k_buf.index_select(0, indices)
            self.v_buf = self.v_buf.index_select(0, indices)
            self._refresh()

    def trim_front(self, columns: int) -> None:
        """Forget the first ``columns`` positions (they are padding in every row)."""
        self.start += columns
        self._refresh()


class BatchKVCache(Cache):
    """The KV cache of a left-padded batch, plus its 2-D attention mask (1 = real token)."""

    def __init__(self, num_layers: int) -> None:
        super().__init__(layers=[BatchLayer() for _ in range(num_layers)])
        self.mask = torch.zeros(0, 0, dtype=torch.long)

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])

    def layer(self, index: int) -> BatchLayer:
        layer = self.layers[index]
        assert isinstance(layer, BatchLayer)
        return layer

    def mask_for_step(self, query_length: int) -> torch.Tensor:
        """The mask to pass with ``query_length`` new real tokens per row; it is kept as the new mask."""
        ones = torch.ones(self.rows, query_length, dtype=self.mask.dtype)
        self.mask = torch.cat([self.mask, ones], dim=1)
        return self.mask

    def clear_row(self, row: int) -> None:
        """Mask out a finished row's tokens; its slot stays until it is reused or compacted."""
        self.mask[row] = 0

    def place(self, row: int, source: BatchKVCache, source_row: int, tokens: int) -> None:
        """Put the last ``tokens`` positions of ``source``'s ``source_row`` into our ``row``,
        right-aligned, and mask out everything before them. Needs ``tokens <= self.length``."""
        length = self.length
        self.mask[row, : length - tokens] = 0
        self.mask[row, length - tokens :] = 1
        for i in range(len(self.layers)):
            mine, theirs = self.layer(i), source.layer(i)
            for name in ("k_buf", "v_buf"):
                src = getattr(theirs, name)[source_row, :, theirs.end - tokens : theirs.end]
                getattr(mine, name)[row, :, mine.end - tokens : mine.end] = src

    @property
    def length(self) -> int:
        """Positions per row, padding included."""
        return int(self.mask.shape[1])

    def select(self, rows: Sequence[int]) -> None:
        """Keep only ``rows`` (in that order), then trim columns that became padding everywhere."""
        index = torch.tensor(list(rows), dtype=torch.long)
        self.mask = self.mask.index_select(0, index)
        for i in range(len(self.layers)):
            self.layer(i).batch_select_indices(index)
        self.trim()

    def trim(self) -> None:
        if self.rows == 0 or self.mask.shape[1] == 0:
            return
        # Rows are left-padded, so the longest row decides how many leading columns are live.
        padding = int((self.mask.shape[1] - self.mask.sum(dim=1)).min())
        if padding > 0:
            self.mask = self.mask[:, padding:]
            for i in range(len(self.layers)):
                self.layer(i).trim_front(padding)

    def merge(self, other: BatchKVCache) -> None:
        """Append ``other``'s rows below ours, left-padding the shorter side to a common length."""
        if other.rows == 0:
            return
        if self.rows == 0:
            self.layers, self.mask = other.layers, other.mask
            return
        length = max(self.mask.shape[1], other.mask.shape[1])
        self.mask = torch.cat([_left_pad(self.mask, length), _left_pad(other.mask, length)], dim=0)
        for i in range(len(self.layers)):
            mine, theirs = self.layer(i), other.layer(i)
            if not theirs.is_initialized:
                continue
            if not mine.is_initialized:
                self.layers[i] = theirs
                continue
            capacity = _round_up(length)
            for name in ("k_buf", "v_buf"):
                a, b = getattr(mine, name), getattr(theirs, name)
                merged = a.new_zeros(a.shape[0] + b.shape[0], a.shape[1], capacity, a.shape[3])
                a_len, b_len = mine.end - mine.start, theirs.end - theirs.start
                merged[: a.shape[0], :, length - a_len : length] = a[:, :, mine.start : mine.end]
                merged[a.shape[0] :, :, length - b_len : length] = b[:, :, theirs.start : theirs.end]
                setattr(mine, name, merged)
            mine.start, mine.end = 0, length
            mine._refresh()


def _left_pad(mask: torch.Tensor, length: int) -> torch.Tensor:
    missing = length - mask.shape[1]
    if missing == 0:
        return mask
    return torch.cat([mask.new_zeros(mask.shape[0], missing), mask], dim=1)
