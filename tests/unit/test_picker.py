"""Unit tests for the power-of-two-choices replica picker."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from stratus.dispatch.picker import power_of_two_choices


class Replica:
    """A candidate compared by identity, as the pool's replicas are."""

    def __init__(self, name: str, load: int) -> None:
        self.name = name
        self.load = load

    def __repr__(self) -> str:
        return f"Replica({self.name!r}, {self.load})"


def load_of(replica: Replica) -> int:
    return replica.load


def test_empty_candidates_return_none_without_reading_load() -> None:
    def load(_: object) -> int:
        raise AssertionError("load must not be read when there is nothing to pick")

    assert power_of_two_choices([], load, random.Random(0)) is None


def test_single_candidate_is_returned_whatever_its_load() -> None:
    only = Replica("only", 1000)
    assert power_of_two_choices([only], load_of, random.Random(0)) is only


def test_two_candidates_always_yield_the_less_loaded() -> None:
    # With two candidates both are sampled (the two choices are distinct), so the
    # less loaded one must win every draw, whichever order they are drawn in.
    rng = random.Random(1)
    light, heavy = Replica("light", 1), Replica("heavy", 5)
    for candidates in ([light, heavy], [heavy, light]):
        picks = {power_of_two_choices(candidates, load_of, rng) for _ in range(200)}
        assert picks == {light}


def test_equal_loads_still_pick_one_of_the_candidates() -> None:
    rng = random.Random(2)
    candidates = [Replica(str(i), 3) for i in range(4)]
    picks = Counter(power_of_two_choices(candidates, load_of, rng) for _ in range(400))
    assert set(picks) <= set(candidates)
    assert len(picks) == 4  # ties do not starve anybody


def test_reads_the_load_of_at_most_two_candidates() -> None:
    calls: list[Replica] = []

    def load(replica: Replica) -> int:
        calls.append(replica)
        return replica.load

    candidates = [Replica(str(i), i) for i in range(10)]
    power_of_two_choices(candidates, load, random.Random(3))
    assert 1 <= len(calls) <= 2
    assert len({id(c) for c in calls}) == len(calls)


def test_same_seed_gives_the_same_sequence_of_picks() -> None:
    candidates = [Replica(str(i), i % 3) for i in range(7)]
    rng_a, rng_b = random.Random(99), random.Random(99)
    seq_a = [power_of_two_choices(candidates, load_of, rng_a) for _ in range(50)]
    seq_b = [power_of_two_choices(candidates, load_of, rng_b) for _ in range(50)]
    assert seq_a == seq_b


@given(
    loads=st.lists(st.integers(min_value=0, max_value=50), min_size=0, max_size=20),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_property_pick_is_a_candidate_and_never_the_unique_maximum(loads: list[int], seed: int) -> None:
    candidates = [Replica(str(i), load) for i, load in enumerate(loads)]
    picked = power_of_two_choices(candidates, load_of, random.Random(seed))
    if not candidates:
        assert picked is None
        return
    assert picked is not None
    assert any(picked is c for c in candidates)
    if len(candidates) >= 2:
        # The pick beat (or tied) a distinct second sample, so some other candidate is at
        # least as loaded: the single most loaded replica is never chosen.
        others = [c for c in candidates if c is not picked]
        assert any(c.load >= picked.load for c in others)


def test_many_draws_strongly_favour_less_loaded_replicas() -> None:
    # Loads 0..9: with two distinct uniform samples, the replica of rank k (0 = least
    # loaded) wins with probability 2 * (n - 1 - k) / (n * (n - 1)): 20% for the least
    # loaded, 0% for the most loaded, against 10% each for a uniform pick.
    candidates = [Replica(f"r{load}", load) for load in range(10)]
    rng = random.Random(12345)
    draws = 20_000
    picks = Counter(power_of_two_choices(candidates, load_of, rng) for _ in range(draws))
    counts = [picks[c] for c in candidates]
    assert counts[-1] == 0
    assert abs(counts[0] / draws - 0.20) < 0.02
    assert sum(counts[:5]) / draws > 0.70  # the lighter half takes most of the traffic
    # Expected counts fall by 2/90 per rank; sampling noise is far smaller than a 2-rank gap.
    for lighter, heavier in zip(counts, counts[2:], strict=False):
        assert lighter > heavier
    mean_load = sum(c.load * picks[c] for c in candidates) / draws
    assert mean_load < 3.2  # uniform would give 4.5; the exact expectation is 3.0


def test_works_with_any_sequence_type() -> None:
    rng = random.Random(4)
    assert power_of_two_choices((7, 3), lambda value: value, rng) == 3
    assert power_of_two_choices("ab", lambda ch: {"a": 1, "b": 0}[ch], rng) == "b"
