"""The batch KV cache's row operations, checked on small tensors without a model."""

from __future__ import annotations

import torch

from stratus.llm.kvcache import CHUNK, BatchKVCache


def filled(rows: list[list[float]]) -> BatchKVCache:
    """A one-layer cache whose rows hold the given values (one head, head_dim 1), left-padded."""
    width = max(len(r) for r in rows)
    keys = torch.zeros(len(rows), 1, width, 1)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        keys[i, 0, width - len(r):, 0] = torch.tensor(r)
        mask[i, width - len(r):] = 1
    cache = BatchKVCache(1)
    cache.mask = mask
    cache.update(keys, keys.clone(), 0)
    return cache


def live(cache: BatchKVCache) -> list[list[float]]:
    """Each row's unmasked keys, in order."""
    keys = cache.layer(0).keys
    assert keys is not None
    return [[float(k) for k, m in zip(keys[i, 0, :, 0], cache.mask[i], strict=True) if m]
            for i in range(cache.rows)]


def test_update_grows_in_chunks_without_losing_data() -> None:
    cache = filled([[1, 2], [3]])
    for step in range(CHUNK + 5):
        cache.mask_for_step(1)
        new = torch.full((2, 1, 1, 1), float(10 + step))
        keys, _ = cache.update(new, new, 0)
        assert keys.shape[2] == cache.length == 3 + step
    assert live(cache)[1][:3] == [3.0, 10.0, 11.0]
    assert cache.get_seq_length() == cache.length


def test_select_drops_rows_and_trims_padding() -> None:
    cache = filled([[1, 2, 3, 4], [5], [6, 7]])
    cache.select([1, 2])
    assert live(cache) == [[5.0], [6.0, 7.0]]
    assert cache.length == 2  # the columns only the dropped row used are gone
    assert cache.get_mask_sizes(1, 0) == (3, 0)


def test_merge_left_pads_the_shorter_side() -> None:
    cache = filled([[1, 2, 3]])
    cache.merge(filled([[4], [5, 6, 7, 8]]))
    assert live(cache) == [[1.0, 2.0, 3.0], [4.0], [5.0, 6.0, 7.0, 8.0]]
    assert cache.length == 4


def test_a_cleared_row_is_reused_in_place() -> None:
    cache = filled([[1, 2, 3, 4], [5, 6]])
    cache.clear_row(0)
    assert live(cache) == [[], [5.0, 6.0]]
    cache.place(0, filled([[9], [7, 8]]), 1, 2)
    assert live(cache) == [[7.0, 8.0], [5.0, 6.0]]
    cache.trim()
    assert cache.length == 2


def test_merging_into_an_empty_cache_adopts_the_other() -> None:
    cache = BatchKVCache(1)
    cache.merge(filled([[1], [2, 3]]))
    assert live(cache) == [[1.0], [2.0, 3.0]]
