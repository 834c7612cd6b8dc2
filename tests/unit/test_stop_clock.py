"""The server's stop, step by step: a slow step is named in the log, a hung one is cancelled
at its limit and the stop goes on."""

from __future__ import annotations

import asyncio
import logging

import pytest

from stratus.server import StopClock


async def test_a_hung_step_is_cancelled_named_and_the_stop_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = StopClock()
    clock.SLOW_STOP_S, clock.STEP_LIMIT_S = 0.01, 0.1
    hung = asyncio.Event()
    cancelled: list[bool] = []

    async def never() -> None:
        try:
            await hung.wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    ran: list[str] = []

    async def quick() -> None:
        ran.append("quick")

    with caplog.at_level(logging.WARNING, logger="stratus.server"):
        await clock.step("controller", never())
        await clock.step("usage", quick())
    assert cancelled == [True] and ran == ["quick"]
    said = [record.getMessage() for record in caplog.records]
    assert "stopping: still waiting for controller" in said
    assert "stopping: controller did not end within 0 s; cancelled, stopping the rest" in said
    assert not any("usage" in line for line in said), "a quick step says nothing"


async def test_a_slow_step_that_ends_is_named_with_its_time(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = StopClock()
    clock.SLOW_STOP_S = 0.01
    with caplog.at_level(logging.WARNING, logger="stratus.server"):
        await clock.step("audit", asyncio.sleep(0.05))
    said = [record.getMessage() for record in caplog.records]
    assert said[0] == "stopping: still waiting for audit"
    assert said[1].startswith("stopping: audit took ")
