"""What the async worker's drain loop sleeps on between reads of the queue: a wake-up that any
code on the loop sets, resuming the sleeper at the next step, with nothing made per sleep but a
future and a timer (``asyncio.wait_for`` on an ``Event`` makes a task each time, and takes
three steps of the loop to resume the sleeper)."""

from __future__ import annotations

import asyncio


class Wakeup:
    def __init__(self) -> None:
        self._pending = False  # set while nobody slept: the next sleep returns at once
        self._sleeper: asyncio.Future[None] | None = None

    def set(self) -> None:
        sleeper = self._sleeper
        if sleeper is not None:
            if not sleeper.done():
                sleeper.set_result(None)
        else:
            self._pending = True

    async def sleep(self, timeout_s: float) -> None:
        """Until set (at once if it was set since the last sleep) or ``timeout_s`` passed."""
        if self._pending or timeout_s <= 0:
            self._pending = False
            return
        loop = asyncio.get_running_loop()
        sleeper = self._sleeper = loop.create_future()
        timer = loop.call_later(timeout_s, _end, sleeper)
        try:
            await sleeper
        finally:
            timer.cancel()
            self._sleeper = None
            self._pending = False


def _end(sleeper: asyncio.Future[None]) -> None:
    if not sleeper.done():
        sleeper.set_result(None)
