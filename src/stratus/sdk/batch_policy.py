"""The pure side of dynamic batching: when a batch runs and how many items it takes, and how
the batched function's answer maps back onto its callers. No clocks, threads or loops here."""

from __future__ import annotations

import bisect
import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class BatchError(RuntimeError):
    """The batched function's answer cannot give every caller its own result."""


# -- policy (pure) ----------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchPolicy:
    """When a batch runs and how many of the queued items it takes: the rule of Triton's
    dynamic batcher (see ``take``). Items are taken oldest first."""

    max_batch_size: int = 32
    max_wait_s: float = 0.005
    preferred_batch_sizes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, not {self.max_batch_size}")
        if self.max_wait_s < 0:
            raise ValueError(f"max_wait_ms must not be negative, not {self.max_wait_s * 1000:g}")
        sizes = tuple(sorted(set(self.preferred_batch_sizes)))
        if any(size < 1 or size > self.max_batch_size for size in sizes):
            raise ValueError(f"preferred_batch_sizes {list(sizes)} must lie in 1..max_batch_size "
                             f"({self.max_batch_size})")
        object.__setattr__(self, "preferred_batch_sizes", sizes)

    def take(self, queued: int, waited_s: float) -> int:
        """How many of ``queued`` items to run now, the batch having waited ``waited_s`` (from
        ``BatchSlots.window_start``); 0 means wait for more.

        - Once the oldest item has waited ``max_wait_s``: everything queued, up to
          ``max_batch_size`` (Triton sends the pending batch "as is", ignoring preferred sizes).
        - Before that, with preferred sizes: the largest preferred size that the queue can fill.
        - Before that, without: ``max_batch_size`` once the queue holds that many.
        """
        if queued <= 0:
            return 0
        if waited_s >= self.max_wait_s:
            return min(queued, self.max_batch_size)
        if self.preferred_batch_sizes:
            index = bisect.bisect_right(self.preferred_batch_sizes, queued)
            return self.preferred_batch_sizes[index - 1] if index else 0
        return self.max_batch_size if queued >= self.max_batch_size else 0


# -- results: one per caller --------------------------------------------------------------------
Outcome = tuple[Any, BaseException | None]  # (result, error): the error wins when set

_NOT_A_LIST = (str, bytes, bytearray, Mapping, set, frozenset)


def split_results(output: Any, size: int, name: str) -> list[Outcome]:
    """Pair each caller with its own result; an ``Exception`` at a position is that caller's
    error alone. Anything but one result per item (in order) is an error for all of them."""
    if isinstance(output, _NOT_A_LIST) or not hasattr(output, "__len__"):
        raise BatchError(f"{name} must return a list with one result per item, "
                         f"not {type(output).__name__}")
    results = list(output)
    if len(results) != size:
        raise BatchError(f"{name} returned {len(results)} results for a batch of {size}")
    return [(None, item) if isinstance(item, Exception) else (item, None) for item in results]


def _copy_for_caller(error: BaseException) -> BaseException:
    """A copy per caller: callers on different threads raising one instance would splice
    their tracebacks into it. The original stays reachable as the cause."""
    try:
        clone = copy.copy(error)
        if type(clone) is not type(error) or str(clone) != str(error):
            return error
    except Exception:  # an exception class that cannot be rebuilt from its args
        return error
    clone.__cause__ = error
    return clone


def failed(error: BaseException, size: int) -> list[Outcome]:
    return [(None, _copy_for_caller(error)) for _ in range(size)]


class BatchSlots:
    """How many batches run at once, and when a batch's wait starts.

    The wait starts when the oldest queued item arrived or, if later, when a batch finished
    while every slot was busy. Items that queued behind a busy batcher thus still get
    ``max_wait_s`` to gather the callers that the finished batch just answered; otherwise a
    fixed set of clients splits into two half-size cohorts that take turns. This is Ray
    Serve's batch window; Triton counts the delay from arrival alone."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"max_concurrent_batches must be at least 1, not {limit}")
        self.limit = limit
        self.running = 0
        self.freed_at = float("-inf")

    def available(self) -> bool:
        return self.running < self.limit

    def start(self) -> None:
        self.running += 1

    def finish(self, now: float) -> None:
        if self.running == self.limit:
            self.freed_at = now
        self.running -= 1

    def window_start(self, oldest_arrival: float) -> float:
        return max(oldest_arrival, self.freed_at)
