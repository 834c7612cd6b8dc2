"""Splitting a deployment's desired replicas between the revisions that share its traffic."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stratus.autoscale.apportion import apportion
from stratus.control.routing import Routing
from stratus.dispatch.load import MetricSample, combine


def test_one_revision_gets_everything() -> None:
    assert apportion(3, {1: 100}, {}) == {1: 3}
    assert apportion(0, {1: 100}, {1: 0.0}) == {1: 0}


def test_weights_round_up_so_a_canary_keeps_a_replica() -> None:
    assert apportion(1, {1: 90, 2: 10}, {}) == {1: 1, 2: 1}
    assert apportion(10, {1: 90, 2: 10}, {}) == {1: 9, 2: 1}
    assert apportion(0, {1: 90, 2: 10}, {}) == {1: 0, 2: 0}


def test_observed_demand_wins_over_a_smaller_weight() -> None:
    # Sticky keys sent 60% of the load to the 10% revision.
    assert apportion(10, {1: 90, 2: 10}, {1: 4.0, 2: 6.0}) == {1: 9, 2: 6}


def test_a_pinned_revision_at_weight_zero_scales_with_its_demand() -> None:
    assert apportion(2, {1: 100, 2: 0}, {1: 3.0, 2: 0.5}) == {1: 2, 2: 1}
    assert apportion(2, {1: 100, 2: 0}, {1: 3.0}) == {1: 2, 2: 0}


@given(st.integers(0, 50), st.lists(st.integers(0, 100), min_size=1, max_size=5),
       st.lists(st.floats(0, 20), min_size=5, max_size=5))
def test_shares_cover_the_total_and_never_starve_demand(
        total: int, raw: list[int], loads: list[float]) -> None:
    weights = {rev: w for rev, w in enumerate(raw, start=1)}
    demand = {rev: loads[rev - 1] for rev in weights}
    shares = apportion(total, weights, demand)
    assert set(shares) == set(weights)
    if sum(raw) == 100:
        assert sum(shares.values()) >= total
    for rev, load in demand.items():
        if load > 0:
            assert shares[rev] >= 1


def _sample(concurrency: float, arrivals: int, idle: float | None, queued: int = 0) -> MetricSample:
    return MetricSample(t=10.0, interval_s=1.0, average_concurrency=concurrency,
                        peak_concurrency=int(concurrency + 0.999), arrivals=arrivals,
                        queued=queued, idle_for_s=idle)


def test_combined_samples_add_load_and_idle_only_when_all_idle() -> None:
    assert combine([]) is None
    one = _sample(2.0, 5, None)
    assert combine([one]) is one
    both = combine([_sample(2.0, 5, None), _sample(0.5, 1, None, queued=2)])
    assert both is not None
    assert (both.average_concurrency, both.arrivals, both.queued) == (2.5, 6, 2)
    idle = combine([_sample(0.0, 0, 30.0), _sample(0.0, 0, 12.0)])
    assert idle is not None and idle.idle_for_s == 12.0
    never_used = combine([_sample(0.0, 0, 30.0), _sample(0.0, 0, None)])
    assert never_used is not None and never_used.idle_for_s == 30.0, \
        "a revision that never ran says nothing about idleness"
    busy = combine([_sample(0.0, 0, 30.0), _sample(1.0, 3, None)])
    assert busy is not None and busy.idle_for_s is None


def test_a_shadow_at_weight_zero_is_no_member_of_the_split() -> None:
    routing = Routing(traffic={1: 100, 2: 0, 3: 0}, stable=1, shadow=2)
    assert routing.members() == {1, 3}
    assert routing.needed() == {1, 2, 3}
    routing.traffic = {1: 50, 2: 50}
    assert routing.members() == {1, 2}, "a shadow with a weight also serves clients"
