"""``EmbeddingServer`` on a tiny BERT: shape, normalisation, batching invariance, limits."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import torch

from llm_models import make_context, tiny_model
from stratus.errors import BadRequest, ContextLengthExceeded
from stratus.llm.embeddings import EmbeddingServer, mean_pool
from stratus.sdk.batching import take_batch_sizes

TEXTS = ["a small cat", "the wide sea", "Four score and seven years ago our fathers brought forth",
         "café naïve 你好"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> EmbeddingServer:
    return EmbeddingServer(make_context(tiny_model(tmp_path_factory, "bert")))


async def test_shape_normalisation_and_token_count(server: EmbeddingServer) -> None:
    out = await server({"input": TEXTS})
    vectors = torch.tensor(out["data"])
    assert vectors.shape == (len(TEXTS), 64)
    assert torch.allclose(vectors.norm(dim=1), torch.ones(len(TEXTS)), atol=1e-5)
    assert out["prompt_tokens"] == sum(len(server.tokenizer.encode(t)) for t in TEXTS)
    assert not torch.allclose(vectors[0], vectors[1])


async def test_an_embedding_is_the_same_alone_and_in_a_batch(server: EmbeddingServer) -> None:
    batched = (await server({"input": TEXTS}))["data"]
    for i, text in enumerate(TEXTS):
        alone = (await server({"input": [text]}))["data"][0]
        assert torch.allclose(torch.tensor(alone), torch.tensor(batched[i]), atol=1e-5)


async def test_concurrent_requests_share_a_forward_pass(server: EmbeddingServer) -> None:
    take_batch_sizes()
    answers = await asyncio.gather(*(server({"input": [t]}) for t in TEXTS))
    sizes = next(iter(take_batch_sizes().values()))
    assert max(sizes) > 1
    reference = (await server({"input": TEXTS}))["data"]
    for answer, expected in zip(answers, reference, strict=True):
        assert torch.allclose(torch.tensor(answer["data"][0]), torch.tensor(expected), atol=1e-5)


async def test_token_id_input_matches_text_input(server: EmbeddingServer) -> None:
    ids = server.tokenizer.encode("the wide sea")
    by_ids = await server({"input": [ids]})
    by_text = await server({"input": ["the wide sea"]})
    assert by_ids["prompt_tokens"] == len(ids)
    assert torch.allclose(torch.tensor(by_ids["data"]), torch.tensor(by_text["data"]), atol=1e-6)


def test_mean_pooling_ignores_padding() -> None:
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [100.0, 100.0]]])
    pooled = mean_pool(hidden, torch.tensor([[1, 1, 0]]))
    assert torch.allclose(pooled, torch.tensor([[1.0, 0.0]]))


async def test_too_long_inputs(server: EmbeddingServer) -> None:
    assert server.max_length == 64
    with pytest.raises(ContextLengthExceeded, match="maximum context length is 64"):
        await server({"input": ["word " * 100]})


@pytest.mark.parametrize("request_", [{}, {"input": []}, {"input": [3]}, {"input": [[]]},
                                      {"input": [[10**9]]}, {"input": [["a"]]}])
async def test_bad_inputs(server: EmbeddingServer, request_: dict[str, Any]) -> None:
    with pytest.raises(BadRequest, match="input"):
        await server(request_)
