"""The LLM engine's admission policy on its own: caps, token budget, FIFO, queue bound."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stratus.errors import BadRequest, Shed
from stratus.llm.scheduler import Limits, Scheduler


def make(seqs: int = 2, tokens: int = 100, queue: int = 3) -> Scheduler[str]:
    return Scheduler(Limits(max_num_seqs=seqs, max_num_tokens=tokens, max_queue=queue))


def test_admits_up_to_the_sequence_cap_then_queues() -> None:
    s = make(seqs=2)
    assert s.submit("a", 10) is True
    assert s.submit("b", 10) is True
    assert s.submit("c", 10) is False
    assert s.stats() == {"running": 2, "waiting": 1, "tokens_budget_used": 20, "tokens_budget": 100}


def test_token_budget_caps_admission() -> None:
    s = make(seqs=10, tokens=100)
    assert s.submit("a", 60) is True
    assert s.submit("b", 50) is False  # 110 > 100
    assert s.release("a") == ["b"]
    assert s.tokens_used == 50


def test_release_admits_in_fifo_order() -> None:
    s = make(seqs=1, queue=5)
    s.submit("a", 1)
    for key in "bcd":
        s.submit(key, 1)
    assert s.release("a") == ["b"]
    assert s.release("b") == ["c"]
    assert s.release("c") == ["d"]
    assert s.release("d") == []
    assert s.stats()["running"] == 0


def test_a_large_head_is_not_overtaken() -> None:
    s = make(seqs=5, tokens=100)
    s.submit("a", 60)
    s.submit("big", 50)  # waits for room
    assert s.submit("small", 10) is False  # would fit, but FIFO keeps it behind "big"
    assert s.release("a") == ["big", "small"]


def test_queue_bound_sheds() -> None:
    s = make(seqs=1, queue=2)
    s.submit("a", 1)
    s.submit("b", 1)
    s.submit("c", 1)
    with pytest.raises(Shed) as caught:
        s.submit("d", 1)
    assert caught.value.status == 429
    s.release("b")  # a waiting one leaves: room in the queue again
    assert s.submit("d", 1) is False


def test_zero_queue_sheds_only_beyond_capacity() -> None:
    s = make(seqs=1, queue=0)
    assert s.submit("a", 1) is True
    with pytest.raises(Shed):
        s.submit("b", 1)


def test_a_sequence_that_can_never_fit_is_a_bad_request() -> None:
    s = make(tokens=100)
    with pytest.raises(BadRequest, match="token budget"):
        s.submit("a", 101)


def test_releasing_a_waiting_sequence_admits_nothing() -> None:
    s = make(seqs=1)
    s.submit("a", 1)
    s.submit("b", 1)
    assert s.release("b") == []
    assert s.stats()["waiting"] == 0
    assert s.release("unknown") == []


def test_drain_forgets_everything() -> None:
    s = make(seqs=1)
    s.submit("a", 5)
    s.submit("b", 5)
    assert s.drain() == ["a", "b"]
    assert s.stats() == {"running": 0, "waiting": 0, "tokens_budget_used": 0, "tokens_budget": 100}


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError):
        Limits(max_num_seqs=0, max_num_tokens=1, max_queue=0)


@given(st.lists(st.tuples(st.booleans(), st.integers(1, 40)), max_size=60))
def test_invariants_hold_under_any_sequence_of_operations(ops: list[tuple[bool, int]]) -> None:
    s = make(seqs=3, tokens=80, queue=4)
    live: list[str] = []
    costs: dict[str, int] = {}
    for n, (submit, cost) in enumerate(ops):
        if submit or not live:
            key = f"k{n}"
            try:
                s.submit(key, cost)
            except Shed:
                assert s.waiting == 4
                continue
            live.append(key)
            costs[key] = cost
        else:
            s.release(live.pop(cost % len(live)))
        assert s.running <= 3
        assert s.waiting <= 4
        assert s.tokens_used <= 80
        assert s.running + s.waiting == len(live)
    running = [k for k in live if k in s._running]
    assert s.tokens_used == sum(costs[k] for k in running)
