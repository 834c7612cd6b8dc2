"""Unit tests for ``@stratus.batch``: the pure policy, result pairing, the sync and async
batchers under real threads and tasks, and the batch-size counts that ride the heartbeat."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import stratus
from stratus.dispatch.channel import ReplicaChannel
from stratus.runtime.connection import FramedConnection
from stratus.runtime.loader import HandlerKind, _classify
from stratus.runtime.messages import HEARTBEAT, Heartbeat
from stratus.sdk.batch_policy import BatchError, BatchPolicy, BatchSlots, split_results
from stratus.sdk.batching import BUCKETS, BatchSizeHistogram, take_batch_sizes

LONG_WAIT_MS = 10_000.0  # batches in these tests fill by size; the wait never decides them


# -- policy -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("queued", "waited_s", "expected"),
    [(0, 9.0, 0), (1, 0.0, 0), (7, 0.009, 0), (8, 0.0, 8), (20, 0.0, 8),
     (1, 0.01, 1), (5, 0.5, 5), (20, 0.5, 8)],
)
def test_policy_runs_when_full_or_when_the_wait_expires(queued: int, waited_s: float,
                                                        expected: int) -> None:
    assert BatchPolicy(max_batch_size=8, max_wait_s=0.01).take(queued, waited_s) == expected


@pytest.mark.parametrize(
    ("queued", "waited_s", "expected"),
    [(3, 0.0, 0), (4, 0.0, 4), (7, 0.0, 4), (8, 0.0, 8), (15, 0.0, 8), (40, 0.0, 8),
     # expired: everything pending up to the maximum, preferred sizes or not (as Triton)
     (3, 0.01, 3), (7, 0.01, 7), (40, 0.01, 16)],
)
def test_preferred_sizes_run_at_once_and_the_largest_one_wins(queued: int, waited_s: float,
                                                             expected: int) -> None:
    policy = BatchPolicy(max_batch_size=16, max_wait_s=0.01, preferred_batch_sizes=(8, 4, 4))
    assert policy.preferred_batch_sizes == (4, 8)
    assert policy.take(queued, waited_s) == expected


def test_zero_wait_runs_whatever_is_queued() -> None:
    policy = BatchPolicy(max_batch_size=4, max_wait_s=0.0)
    assert [policy.take(n, 0.0) for n in (1, 3, 9)] == [1, 3, 4]


@pytest.mark.parametrize("kwargs", [{"max_batch_size": 0}, {"max_wait_ms": -1},
                                    {"preferred_batch_sizes": [64]}, {"preferred_batch_sizes": [0]},
                                    {"max_concurrent_batches": 0}])
def test_bad_settings_fail_at_decoration(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        stratus.batch(**kwargs)


def test_the_wait_restarts_when_a_saturated_batcher_frees_a_slot() -> None:
    slots = BatchSlots(limit=1)
    assert slots.available() and slots.window_start(5.0) == 5.0
    slots.start()
    assert not slots.available()
    slots.finish(now=9.0)  # items queued behind the busy batcher wait from here
    assert slots.window_start(5.0) == 9.0 and slots.window_start(12.0) == 12.0
    two = BatchSlots(limit=2)
    two.start()
    two.start()
    two.finish(now=3.0)
    two.finish(now=4.0)  # a slot was already free: nobody was held up by this one
    assert two.window_start(1.0) == 3.0


# -- results ------------------------------------------------------------------------------------
def test_results_pair_with_callers_and_exceptions_stay_with_their_item() -> None:
    error = ValueError("bad item")
    assert split_results([1, error, 3], 3, "f") == [(1, None), (None, error), (3, None)]
    rows = split_results(np.arange(6).reshape(3, 2), 3, "f")
    np.testing.assert_array_equal(rows[2][0], [4, 5])


@pytest.mark.parametrize("output", [[1, 2], {"a": 1, "b": 2, "c": 3}, "abc", None, 3])
def test_anything_but_one_result_per_item_is_a_batch_error(output: Any) -> None:
    with pytest.raises(BatchError, match="f "):
        split_results(output, 3, "f")


# -- sync batcher -------------------------------------------------------------------------------
def call_concurrently(function: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """Call ``function`` once per item, each on its own thread; results (or errors) in order."""
    outcomes: list[Any] = [None] * len(items)
    barrier = threading.Barrier(len(items))

    def worker(index: int) -> None:
        barrier.wait()
        try:
            outcomes[index] = function(items[index])
        except Exception as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(items))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return outcomes


def test_every_thread_gets_its_own_result_in_full_batches() -> None:
    sizes: list[int] = []

    @stratus.batch(max_batch_size=8, max_wait_ms=LONG_WAIT_MS)
    def double(items: list[int]) -> list[int]:
        sizes.append(len(items))
        return [2 * item for item in items]

    assert call_concurrently(double, list(range(16))) == [2 * i for i in range(16)]
    assert sizes == [8, 8]


def test_preferred_size_runs_before_the_batch_is_full() -> None:
    sizes: list[int] = []

    @stratus.batch(max_batch_size=8, max_wait_ms=LONG_WAIT_MS, preferred_batch_sizes=[2])
    def negate(items: list[int]) -> list[int]:
        sizes.append(len(items))
        return [-item for item in items]

    assert call_concurrently(negate, [1, 2, 3, 4]) == [-1, -2, -3, -4]
    assert sizes == [2, 2]


def test_a_single_caller_runs_when_the_wait_expires() -> None:
    sizes: list[int] = []

    @stratus.batch(max_batch_size=32, max_wait_ms=1)
    def square(items: list[int]) -> list[int]:
        sizes.append(len(items))
        return [item * item for item in items]

    assert square(7) == 49
    assert sizes == [1]


def test_an_exception_in_the_results_goes_to_its_caller_only() -> None:
    @stratus.batch(max_batch_size=6, max_wait_ms=LONG_WAIT_MS)
    def check(items: list[int]) -> list[Any]:
        return [ValueError(f"odd {i}") if i % 2 else i for i in items]

    outcomes = call_concurrently(check, list(range(6)))
    assert [o for o in outcomes if not isinstance(o, Exception)] == [0, 2, 4]
    assert [str(o) for o in outcomes if isinstance(o, ValueError)] == ["odd 1", "odd 3", "odd 5"]


def test_a_raising_batch_fails_all_its_callers_and_the_next_batch_runs() -> None:
    calls: list[list[int]] = []

    @stratus.batch(max_batch_size=4, max_wait_ms=LONG_WAIT_MS)
    def fragile(items: list[int]) -> list[int]:
        calls.append(items)
        if len(calls) == 1:
            raise RuntimeError("the model fell over")
        return items

    outcomes = call_concurrently(fragile, [1, 2, 3, 4])
    assert all(isinstance(o, RuntimeError) and str(o) == "the model fell over" for o in outcomes)
    assert len({id(o) for o in outcomes}) == 4  # one copy per caller, not one shared instance
    assert call_concurrently(fragile, [5, 6, 7, 8]) == [5, 6, 7, 8]


def test_a_wrong_length_fails_every_caller_with_a_batch_error() -> None:
    @stratus.batch(max_batch_size=3, max_wait_ms=LONG_WAIT_MS)
    def short(items: list[int]) -> list[int]:
        return items[:-1]

    outcomes = call_concurrently(short, [1, 2, 3])
    assert all(isinstance(o, BatchError) for o in outcomes)
    assert "returned 2 results for a batch of 3" in str(outcomes[0])


class Scaler:
    def __init__(self, factor: int) -> None:
        self.factor = factor
        self.sizes: list[int] = []

    @stratus.batch(max_batch_size=4, max_wait_ms=LONG_WAIT_MS)
    def scale(self, items: list[int]) -> list[int]:
        self.sizes.append(len(items))
        return [self.factor * item for item in items]


def test_each_instance_batches_its_own_calls() -> None:
    twice, thrice = Scaler(2), Scaler(3)
    outcomes = call_concurrently(lambda i: (twice if i < 4 else thrice).scale(i), list(range(8)))
    assert outcomes == [0, 2, 4, 6, 12, 15, 18, 21]
    assert twice.sizes == thrice.sizes == [4]


# -- async batcher ------------------------------------------------------------------------------
class Embedder:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate: asyncio.Event | None = None

    @stratus.batch(max_batch_size=4, max_wait_ms=LONG_WAIT_MS)
    async def embed(self, texts: list[str]) -> list[Any]:
        self.batches.append(texts)
        if self.gate is not None:
            await self.gate.wait()
        if "explode" in texts:
            raise RuntimeError("the encoder crashed")
        if "short" in texts:
            return [[1.0]]
        return [ValueError("empty text") if not text else [float(len(text))] for text in texts]


async def test_async_callers_get_their_own_results() -> None:
    model = Embedder()
    texts = ["a", "bb", "", "dddd", "eeeee", "f", "gg", "hhh"]
    outcomes = await asyncio.gather(*(model.embed(t) for t in texts), return_exceptions=True)
    assert outcomes[:2] == [[1.0], [2.0]] and outcomes[3:] == [[4.0], [5.0], [1.0], [2.0], [3.0]]
    assert isinstance(outcomes[2], ValueError)
    assert model.batches == [texts[:4], texts[4:]]


async def test_async_batch_errors_reach_every_caller_of_that_batch() -> None:
    model = Embedder()
    first = await asyncio.gather(*(model.embed(t) for t in ["a", "explode", "c", "d"]),
                                 return_exceptions=True)
    second = await asyncio.gather(*(model.embed(t) for t in ["a", "short", "c", "d"]),
                                  return_exceptions=True)
    third = await asyncio.gather(*(model.embed(t) for t in ["a", "b", "c", "d"]))
    assert all(isinstance(o, RuntimeError) and "crashed" in str(o) for o in first)
    assert all(isinstance(o, BatchError) for o in second)
    assert third == [[1.0]] * 4


async def test_a_cancelled_caller_leaves_its_running_batch_intact() -> None:
    model = Embedder()
    model.gate = asyncio.Event()
    tasks = [asyncio.create_task(model.embed(t)) for t in ["a", "bb", "ccc", "dddd"]]
    await asyncio.sleep(0)  # the tasks queue their items; the fourth starts the batch
    await asyncio.sleep(0)  # the batch task runs up to the gate
    assert model.batches == [["a", "bb", "ccc", "dddd"]]
    tasks[1].cancel()
    model.gate.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(outcomes[1], asyncio.CancelledError)
    assert [outcomes[0], outcomes[2], outcomes[3]] == [[1.0], [3.0], [4.0]]


async def test_a_cancelled_caller_leaves_the_queue() -> None:
    model = Embedder()
    waiting = [asyncio.create_task(model.embed(t)) for t in ["a", "gone"]]
    await asyncio.sleep(0)
    waiting[1].cancel()
    later = [asyncio.create_task(model.embed(t)) for t in ["c", "d", "e"]]
    outcomes = await asyncio.gather(*waiting, *later, return_exceptions=True)
    assert isinstance(outcomes[1], asyncio.CancelledError)
    assert model.batches == [["a", "c", "d", "e"]]


async def test_callers_queued_behind_a_busy_batch_wait_for_company() -> None:
    """A fixed set of clients stays one cohort: the callers a finished batch answers come back
    and join the items that queued behind it, instead of two half batches taking turns."""
    batches: list[list[int]] = []
    gate = asyncio.Event()

    @stratus.batch(max_batch_size=4, max_wait_ms=50)
    async def held(items: list[int]) -> list[int]:
        batches.append(items)
        if len(batches) == 1:
            await gate.wait()
        return items

    first = [asyncio.create_task(held(i)) for i in range(4)]
    await asyncio.sleep(0)
    queued = [asyncio.create_task(held(i)) for i in (4, 5)]
    await asyncio.sleep(0.1)  # longer than max_wait: the queued items' own wait has run out
    gate.set()
    assert await asyncio.gather(*first) == [0, 1, 2, 3]
    returning = [asyncio.create_task(held(i)) for i in (6, 7)]
    assert await asyncio.gather(*queued, *returning) == [4, 5, 6, 7]
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7]]


class BatchedCall:
    @stratus.batch(max_batch_size=2)
    async def __call__(self, requests: list[Any]) -> list[Any]:
        return requests


def test_a_batched_async_call_is_still_an_async_class_handler() -> None:
    assert _classify(BatchedCall, "app.py:BatchedCall") == (HandlerKind.CLASS, True)


# -- batch-size accounting ----------------------------------------------------------------------
def test_sizes_are_counted_per_method_and_taken_as_deltas() -> None:
    take_batch_sizes()  # what earlier tests ran

    @stratus.batch(max_batch_size=2, max_wait_ms=LONG_WAIT_MS)
    def same(items: list[int]) -> list[int]:
        return items

    call_concurrently(same, [1, 2, 3, 4])
    name = same.__qualname__
    assert take_batch_sizes() == {name: {2: 2}}
    assert take_batch_sizes() == {}


def test_the_server_histogram_buckets_sizes_and_ignores_junk() -> None:
    histogram = BatchSizeHistogram()
    histogram.merge({"M.f": {1: 2, 3: 1, 5000: 1}})
    histogram.merge({"M.f": {8: 1, "x": 1, 2: -4, True: 3}, 7: {1: 1}, "M.g": "junk"})
    histogram.merge(["not", "a", "dict"])
    [(method, cumulative, total)] = list(histogram.series())
    assert method == "M.f"
    assert len(cumulative) == len(BUCKETS) + 1
    le = dict(zip(BUCKETS, cumulative, strict=False))
    assert (le[1], le[2], le[4], le[8], le[1024], cumulative[-1]) == (2, 2, 3, 4, 4, 5)
    assert total == 1 * 2 + 3 + 5000 + 8


async def test_the_channel_forwards_batch_sizes_and_accepts_older_heartbeats() -> None:
    channel = ReplicaChannel("r-1", 1, FramedConnection(lambda hello, connection: None))
    received: list[Any] = []
    channel.on_batch_sizes = received.append
    channel.on_message(Heartbeat(HEARTBEAT, 0, 10, 20, 30))
    channel.on_message(Heartbeat(HEARTBEAT, 0, 10, 20, 30, {"stats": {"running": 1.0}}))
    channel.on_message(Heartbeat(HEARTBEAT, 0, 10, 20, 30, {"batch_sizes": {"M.f": {4: 2}}}))
    assert received == [{"M.f": {4: 2}}]
    assert channel.memory.pss == 20
