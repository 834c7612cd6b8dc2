"""Admission policy of the LLM engine: caps on running sequences and reserved tokens, a bounded FIFO queue.

Pure bookkeeping with no torch and no clock, so it is tested on its own; the engine calls it
under its lock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from stratus.errors import BadRequest, Shed

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Limits:
    max_num_seqs: int
    max_num_tokens: int
    max_queue: int

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1 or self.max_num_tokens < 1 or self.max_queue < 0:
            raise ValueError(f"invalid engine limits: {self}")


class Scheduler(Generic[K]):
    """Which sequences hold capacity (running) and which wait for it, in arrival order.

    A sequence's cost is the tokens it may occupy: prompt length plus its max_tokens, so a
    running sequence can never run out of room. Admission is strict FIFO: a large request at the
    head is not overtaken by small ones behind it, so nothing starves.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._running: dict[K, int] = {}
        self._waiting: OrderedDict[K, int] = OrderedDict()
        self._used = 0

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def tokens_used(self) -> int:
        return self._used

    def _fits(self, cost: int) -> bool:
        return (len(self._running) < self.limits.max_num_seqs
                and self._used + cost <= self.limits.max_num_tokens)

    def submit(self, key: K, cost: int) -> bool:
        """True when ``key`` was admitted at once; False when it waits. Raises ``Shed`` when the
        queue is full and ``BadRequest`` when the sequence could never fit the token budget."""
        if key in self._running or key in self._waiting:
            raise ValueError(f"{key!r} was already submitted")
        if cost > self.limits.max_num_tokens:
            raise BadRequest(
                f"this request needs up to {cost} tokens (prompt plus max_tokens), more than this "
                f"deployment's token budget of {self.limits.max_num_tokens}; lower max_tokens")
        if not self._waiting and self._fits(cost):
            self._running[key] = cost
            self._used += cost
            return True
        if len(self._waiting) >= self.limits.max_queue:
            raise Shed(f"the model is busy: {len(self._running)} sequences running and "
                       f"{len(self._waiting)} waiting; retry later", retry_after=1.0)
        self._waiting[key] = cost
        return False

    def release(self, key: K) -> list[K]:
        """Forget ``key`` (finished, cancelled or failed) and return the sequences this admits."""
        cost = self._running.pop(key, None)
        if cost is None:
            self._waiting.pop(key, None)
            return []
        self._used -= cost
        return self._admit()

    def _admit(self) -> list[K]:
        admitted: list[K] = []
        while self._waiting:
            key, cost = next(iter(self._waiting.items()))
            if not self._fits(cost):
                break
            self._waiting.popitem(last=False)
            self._running[key] = cost
            self._used += cost
            admitted.append(key)
        return admitted

    def drain(self) -> list[K]:
        """Forget every sequence, running then waiting (the engine is stopping)."""
        keys = [*self._running, *self._waiting]
        self._running.clear()
        self._waiting.clear()
        self._used = 0
        return keys

    def stats(self) -> dict[str, int]:
        return {"running": self.running, "waiting": self.waiting, "tokens_budget_used": self._used,
                "tokens_budget": self.limits.max_num_tokens}
