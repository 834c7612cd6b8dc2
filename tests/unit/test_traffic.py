"""The traffic policy: weights, sticky assignment and pins (the header that asks for a pin is
the gateway's: tests/unit/test_request_path.py)."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import chisquare

from stratus.dispatch.pool import PoolLimits, RevisionPool
from stratus.dispatch.route import Route
from stratus.dispatch.traffic import TrafficSplit, choose
from stratus.errors import BadRequest


def test_weights_must_sum_to_100_and_name_real_revisions() -> None:
    with pytest.raises(BadRequest, match="sum to 100"):
        TrafficSplit.of({1: 90, 2: 5})
    with pytest.raises(BadRequest, match="start at 1"):
        TrafficSplit.of({0: 100})
    with pytest.raises(BadRequest, match=r"not in 0\.\.100"):
        TrafficSplit.of({1: 120, 2: -20})
    with pytest.raises(BadRequest, match="at least one"):
        TrafficSplit.of({})
    split = TrafficSplit.of({2: 0, 1: 100})
    assert split.shares() == {1: 100}  # a zero weight takes no traffic
    assert TrafficSplit.single(3).shares() == {3: 100}


def test_draw_boundaries() -> None:
    split = TrafficSplit.of({1: 90, 2: 10})
    assert split.pick(0.0) == 1
    assert split.pick(0.8999) == 1
    assert split.pick(0.9) == 2
    assert split.pick(0.99999) == 2


def test_a_90_10_split_over_2000_requests_passes_chi_square() -> None:
    split = TrafficSplit.of({1: 90, 2: 10})
    draws = random.Random(20261201)
    picks = [split.pick(draws.random()) for _ in range(2000)]
    observed = [picks.count(1), picks.count(2)]
    assert chisquare(observed, [1800, 200]).pvalue > 0.001, observed


def test_sticky_keys_spread_by_weight_and_stay_put() -> None:
    split = TrafficSplit.of({1: 50, 2: 30, 3: 20})
    keys = [f"user-{i}" for i in range(3000)]
    first = [split.pick_sticky(key) for key in keys]
    assert first == [split.pick_sticky(key) for key in keys]
    observed = [first.count(r) for r in (1, 2, 3)]
    assert chisquare(observed, [1500, 900, 600]).pvalue > 0.001, observed


def test_sticky_assignment_is_the_same_in_another_process() -> None:
    """Python's hash() is salted per process; md5 is not."""
    code = ("from stratus.dispatch.traffic import TrafficSplit;"
            "s = TrafficSplit.of({1: 50, 2: 50});"
            "print([s.pick_sticky(f'k{i}') for i in range(50)])")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={"PYTHONHASHSEED": "123"})
    split = TrafficSplit.of({1: 50, 2: 50})
    assert other.stdout.strip() == str([split.pick_sticky(f"k{i}") for i in range(50)])


def test_moving_weight_moves_only_the_keys_in_the_moved_range() -> None:
    before = TrafficSplit.of({1: 90, 2: 10})
    after = TrafficSplit.of({1: 75, 2: 25})
    keys = [f"k{i}" for i in range(2000)]
    for key in keys:
        if before.pick_sticky(key) == 2:
            assert after.pick_sticky(key) == 2  # canary users stay on the canary as it grows


def test_pins_win_then_sticky_keys_then_the_draw() -> None:
    split = TrafficSplit.of({1: 100})
    assert choose(split, 4, "user", 0.5) == 4
    assert choose(split, None, "user", 0.5) == 1
    assert choose(TrafficSplit.of({1: 50, 2: 50}), None, None, 0.75) == 2


@given(st.dictionaries(st.integers(1, 50), st.integers(0, 100), min_size=1, max_size=6),
       st.floats(0, 1, exclude_max=True))
def test_a_pick_is_always_a_revision_with_weight(shares: dict[int, int], draw: float) -> None:
    total = sum(shares.values())
    if total != 100:
        return
    split = TrafficSplit.of(shares)
    assert split.pick(draw) in {rev for rev, weight in shares.items() if weight > 0}


def _route(**sticky: str) -> Route:
    pools = {rev: RevisionPool("default", "d", rev, LIMITS, lambda pool: None) for rev in (1, 2)}
    return Route(split=TrafficSplit.of({1: 50, 2: 50}), pools=pools, primary=pools[1], **sticky)


LIMITS = PoolLimits(max_concurrency=1, timeout_s=1.0, max_queued=1, queue_timeout_s=1.0)


def test_a_route_reads_the_sticky_key_from_a_header_or_a_json_field() -> None:
    by_header = _route(sticky_header="x-user")
    assert by_header.sticky_key({"x-user": "ann"}, b"{}") == "ann"
    assert by_header.sticky_key({}, b"{}") is None
    by_field = _route(sticky_field="user")
    assert by_field.sticky_key(None, b'{"user": "ann"}') == "ann"
    assert by_field.sticky_key(None, {"user": 42}) == "42"
    assert by_field.sticky_key(None, b"not json") is None
    assert by_field.sticky_key(None, b'["a list"]') is None
    assert by_field.sticky_key(None, None) is None


def test_a_route_picks_pins_keys_and_draws() -> None:
    route = _route()
    assert route.pick(2, "ann", 0.0) is route.pools[2]
    assert route.pick(7, None, 0.0) is None
    assert route.pick(None, None, 0.0) is route.pools[1]
    assert route.pick(None, None, 0.99) is route.pools[2]
    assert route.pick(None, "ann", 0.0) is route.pick(None, "ann", 0.99), "keys ignore the draw"
