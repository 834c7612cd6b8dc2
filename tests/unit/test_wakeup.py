"""The drain loop's wake-up: a set wakes the sleeper at once, a set made while nobody slept
makes the next sleep return at once, and an unset sleep lasts its timeout."""

from __future__ import annotations

import asyncio
import time

from stratus.invocations.wakeup import Wakeup


async def test_a_set_wakes_the_sleeper_before_its_timeout() -> None:
    wakeup = Wakeup()
    started = time.monotonic()
    asyncio.get_running_loop().call_later(0.05, wakeup.set)
    await wakeup.sleep(5.0)
    assert 0.04 <= time.monotonic() - started < 1.0


async def test_a_set_while_nobody_slept_is_kept_once() -> None:
    wakeup = Wakeup()
    wakeup.set()
    started = time.monotonic()
    await wakeup.sleep(5.0)  # at once
    assert time.monotonic() - started < 0.5
    await wakeup.sleep(0.1)  # the set was used up: this one lasts its timeout
    assert time.monotonic() - started >= 0.09


async def test_a_cancelled_sleep_leaves_the_wakeup_usable() -> None:
    wakeup = Wakeup()
    task = asyncio.create_task(wakeup.sleep(5.0))
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    asyncio.get_running_loop().call_later(0.02, wakeup.set)
    await asyncio.wait_for(wakeup.sleep(5.0), 1.0)
