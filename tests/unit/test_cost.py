"""The cost model C(t) = C0 + C1·t + Σ r_i·t_i, billed memory, and the always-on comparison."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stratus.cost import (
    DEFAULT_PRICES,
    Capacity,
    Metered,
    Prices,
    billed_memory_mb,
    compare,
    cost,
    gb_seconds,
    metered_cost,
    prices_from,
)

MB = 2**20


def test_cost_is_fixed_plus_per_second_plus_resources() -> None:
    rates = {"gb_seconds": 2.0, "prompt_tokens": 0.5}
    assert cost(1.0, 3.0, 2.0, rates, {"gb_seconds": 4.0, "prompt_tokens": 10}) == 1 + 6 + 8 + 5
    assert cost(1.0, 3.0, 0.0, rates, {}) == 1.0


def test_a_resource_without_a_rate_is_an_error() -> None:
    with pytest.raises(KeyError, match="gpu_seconds"):
        cost(0.0, 0.0, 1.0, {"gb_seconds": 1.0}, {"gpu_seconds": 1.0})


def test_memory_limit_is_billed_when_set_else_peak_rounded_up_to_128_mb() -> None:
    assert billed_memory_mb(512, 90 * MB) == 512
    assert billed_memory_mb(None, 0) == 128  # not reported yet: the smallest step
    assert billed_memory_mb(None, 128 * MB) == 128
    assert billed_memory_mb(None, 128 * MB + 1) == 256
    assert billed_memory_mb(None, 700 * MB) == 768
    assert gb_seconds(1536, 2.0) == 3.0


@given(st.lists(st.tuples(st.floats(0, 30), st.sampled_from([128, 256, 1024, 3008]),
                          st.integers(0, 4000), st.integers(0, 4000)), max_size=40))
def test_the_sum_over_invocations_is_the_model_applied_to_the_totals(
        calls: list[tuple[float, int, int, int]]) -> None:
    prices = Prices(per_request=2e-7, per_second=1e-6, per_gb_second=1.7e-5,
                    per_prompt_token=1e-7, per_completion_token=3e-7)
    one_by_one = sum(
        cost(prices.per_request, prices.per_second, t, prices.rates(),
             {"gb_seconds": gb_seconds(mb, t), "prompt_tokens": p, "completion_tokens": c})
        for t, mb, p, c in calls)
    totals = Metered(len(calls), sum(t for t, *_ in calls),
                     sum(gb_seconds(mb, t) for t, mb, _, _ in calls),
                     sum(p for _, _, p, _ in calls), sum(c for *_, c in calls))
    terms = metered_cost(prices, totals)
    assert terms["total"] == pytest.approx(one_by_one, rel=1e-9, abs=1e-15)
    parts = sum(v for k, v in terms.items() if k != "total")
    assert parts == pytest.approx(terms["total"], rel=1e-9, abs=1e-15)


def test_serverless_against_always_on_at_the_peak() -> None:
    prices = Prices(per_request=0.001, per_second=0.0, per_gb_second=0.01, per_replica_second=0.002)
    metered = Metered(requests=100, seconds=50.0, gb_seconds=25.0)
    # Two deployments: peaks 3 and 1, watched 600 s and 300 s; 200 of 900 replica-seconds busy.
    capacities = [Capacity(600.0, 3, 700.0, 150.0), Capacity(300.0, 1, 200.0, 50.0)]
    result = compare(prices, metered, capacities)
    assert result["invocations"] == pytest.approx(100 * 0.001 + 25 * 0.01)
    assert result["idle"] == pytest.approx((900 - 200) * 0.002)
    assert result["serverless"] == pytest.approx(0.35 + 1.4)
    assert result["always_on"] == pytest.approx((3 * 600 + 1 * 300) * 0.002)
    assert result["saved"] == pytest.approx(result["always_on"] - result["serverless"])


def test_idle_never_goes_below_zero() -> None:
    # Sampled busy time can exceed sampled alive time by a sample's worth.
    assert Capacity(1.0, 1, 1.0, 1.25).idle_replica_seconds == 0.0


def test_default_prices_are_the_simulators() -> None:
    prices = prices_from({})
    assert prices.per_request == DEFAULT_PRICES.per_request
    assert prices.per_gb_second == DEFAULT_PRICES.per_gb_second
    assert prices.per_replica_second == DEFAULT_PRICES.per_replica_second


@pytest.mark.parametrize("section, problem", [
    ({"per_request": -1}, "per_request"),
    ({"per_gb_secnd": 1}, "per_gb_secnd"),
    ({"per_prompt_token": "cheap"}, "per_prompt_token"),
])
def test_a_bad_price_sheet_is_refused_naming_the_field(section: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        prices_from(section)
