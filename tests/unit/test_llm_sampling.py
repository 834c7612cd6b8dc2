"""Sampling: parameter validation, greedy, seeds, top-k, top-p, and the drawn distribution."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from stratus.errors import BadRequest
from stratus.llm.sampling import BatchParams, SamplingParams, sample


def batch_of(params: list[SamplingParams]) -> BatchParams:
    return BatchParams.build(params, [p.generator() for p in params])


def test_defaults() -> None:
    p = SamplingParams.from_request({})
    assert p == SamplingParams(max_tokens=None, temperature=1.0, top_p=1.0, top_k=0, stop=(), seed=None)


def test_fields_are_read() -> None:
    p = SamplingParams.from_request({"max_tokens": 5, "temperature": 0, "top_p": 0.5, "top_k": 3,
                                     "stop": ["\n", "END"], "seed": 7})
    assert p == SamplingParams(5, 0.0, 0.5, 3, ("\n", "END"), 7)
    assert p.greedy and p.generator() is None
    assert SamplingParams.from_request({"stop": "x", "top_k": None}).stop == ("x",)


@pytest.mark.parametrize("request_", [
    {"max_tokens": 0}, {"max_tokens": 1.5}, {"max_tokens": True}, {"temperature": -1},
    {"temperature": "hot"}, {"temperature": float("nan")}, {"top_p": 0}, {"top_p": 1.1},
    {"top_k": -1}, {"top_k": 2.0}, {"stop": [""]}, {"stop": [1]}, {"stop": ["x"] * 17},
    {"seed": "1"},
])
def test_invalid_fields_are_bad_requests(request_: dict[str, Any]) -> None:
    field = next(iter(request_))
    with pytest.raises(BadRequest, match=field):
        SamplingParams.from_request(request_)


def test_temperature_zero_is_argmax() -> None:
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    tokens = sample(logits, batch_of([SamplingParams(temperature=0.0)] * 4))
    assert tokens.tolist() == logits.argmax(-1).tolist()


def test_the_same_seed_draws_the_same_tokens() -> None:
    logits = torch.zeros(1, 1000)  # uniform: every draw is up to the generator

    def draws(seed: int) -> list[int]:
        params = batch_of([SamplingParams(seed=seed)])
        return [int(sample(logits, params)[0]) for _ in range(20)]

    assert draws(3) == draws(3)
    assert draws(3) != draws(4)


def test_a_seeded_row_does_not_depend_on_its_neighbours() -> None:
    logits = torch.randn(3, 100, generator=torch.Generator().manual_seed(1))
    alone = sample(logits[1:2], batch_of([SamplingParams(seed=9)]))
    mixed = sample(logits, batch_of([SamplingParams(temperature=0.0), SamplingParams(seed=9),
                                     SamplingParams(seed=None, top_k=5)]))
    assert int(mixed[1]) == int(alone[0])
    assert int(mixed[0]) == int(logits[0].argmax())


def test_unseeded_rows_are_random() -> None:
    logits = torch.zeros(1, 10_000)
    params = batch_of([SamplingParams(), SamplingParams()])
    first, second = sample(torch.cat([logits, logits]), params).tolist()
    assert first != second  # 1 in 10,000 chance of a false failure


def test_top_k_one_is_greedy_at_any_temperature() -> None:
    logits = torch.randn(8, 64, generator=torch.Generator().manual_seed(2))
    params = batch_of([SamplingParams(temperature=5.0, top_k=1, seed=i) for i in range(8)])
    assert sample(logits, params).tolist() == logits.argmax(-1).tolist()


def test_top_k_keeps_draws_in_the_top_k() -> None:
    logits = torch.randn(1, 64, generator=torch.Generator().manual_seed(3)).repeat(200, 1)
    allowed = set(logits[0].topk(3).indices.tolist())
    params = batch_of([SamplingParams(temperature=3.0, top_k=3, seed=i) for i in range(200)])
    drawn = set(sample(logits, params).tolist())
    assert drawn <= allowed and len(drawn) > 1


def test_top_p_keeps_draws_in_the_nucleus() -> None:
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().repeat(400, 1)
    params = batch_of([SamplingParams(top_p=0.75, seed=i) for i in range(400)])
    assert set(sample(logits, params).tolist()) == {0, 1}  # 0.5 + 0.3 reaches 0.75
    tiny = batch_of([SamplingParams(top_p=0.01, seed=i) for i in range(400)])
    assert set(sample(logits, tiny).tolist()) == {0}


def test_draws_follow_the_distribution() -> None:
    probs = torch.tensor([0.6, 0.3, 0.1])
    n = 3000
    params = batch_of([SamplingParams(seed=i) for i in range(n)])
    counts = torch.bincount(sample(probs.log().repeat(n, 1), params), minlength=3).float() / n
    assert torch.allclose(counts, probs, atol=0.04)


def test_temperature_sharpens() -> None:
    logits = torch.tensor([[1.0, 0.0]]).repeat(2000, 1)
    cold = batch_of([SamplingParams(temperature=0.1, seed=i) for i in range(2000)])
    assert sample(logits, cold).float().mean() < 0.01  # e^-10: token 1 almost never


def test_batch_params_select_and_concat() -> None:
    a = batch_of([SamplingParams(temperature=0.0), SamplingParams(top_k=4, seed=1)])
    b = batch_of([SamplingParams(top_p=0.5, seed=2)])
    joined = a.concat(b)
    assert joined.top_k.tolist() == [0, 4, 0]
    kept = joined.select([2, 0])
    assert kept.top_p.tolist() == [0.5, 1.0]
    assert kept.generators[1] is None and not kept.all_greedy
