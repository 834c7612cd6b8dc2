"""One generation request as both sides see it: the engine thread fills it, an asyncio consumer drains it.

Only the engine thread calls ``post`` (which hops onto the consumer's loop); only the loop
touches the pending tokens, so they need no lock.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable

import torch

from stratus.llm.sampling import SamplingParams

Delivery = tuple["Sequence", int | None, str | None, BaseException | None]


class Sequence:
    def __init__(self, prompt: list[int], params: SamplingParams, max_tokens: int,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.prompt = prompt
        self.params = params
        self.max_tokens = max_tokens
        self.loop = loop
        self.generator: torch.Generator | None = params.generator()
        # Set under the engine lock: the consumer went away, or capacity was given back.
        self.cancelled = False
        self.released = False
        # Engine thread only: finished (EOS, length, failure); leaves the batch at the next step.
        self.done = False
        # Loop thread only.
        self._pending: list[int] = []
        self._finish: str | None = None
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def cost(self) -> int:
        """Tokens this sequence may occupy: what the scheduler reserves for it."""
        return len(self.prompt) + self.max_tokens

    def _receive(self, token: int | None, finish: str | None, error: BaseException | None) -> None:
        if self._finish is not None or self._error is not None:
            return
        if token is not None:
            self._pending.append(token)
        self._finish = finish
        self._error = error
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def next_tokens(self) -> tuple[list[int], str | None]:
        """The tokens made since the last call (at least one), and the finish reason once done.
        Raises the engine's error if the model failed."""
        while not self._pending and self._finish is None and self._error is None:
            self._waiter = self.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._error is not None and not self._pending:
            raise self._error
        tokens, self._pending = self._pending, []
        return tokens, self._finish


def _receive_all(items: list[Delivery]) -> None:
    for seq, token, finish, error in items:
        seq._receive(token, finish, error)


def post(deliveries: Iterable[Delivery]) -> list[Sequence]:
    """Hand results to their consumers: one loop callback per event loop, not per sequence.
    Returns the sequences whose loop is gone (closed), so the engine can drop them."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Delivery]] = defaultdict(list)
    for item in deliveries:
        by_loop[item[0].loop].append(item)
    orphans: list[Sequence] = []
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_receive_all, items)
        except RuntimeError:  # the loop was closed under the consumer
            orphans.extend(item[0] for item in items)
    return orphans
