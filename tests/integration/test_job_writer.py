"""The jobs' event writer on a real SQLite log: appends handed over without waiting are stored
in the order they were made, and listeners hear each stored event once, in that order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from stratus.errors import BadRequest
from stratus.jobs.events import JobEvent
from stratus.jobs.log import JobLog
from stratus.jobs.writer import EventWriter
from stratus.store.db import make_engine, migrate, sqlite_url


def test_events_are_stored_and_heard_in_the_order_they_were_handed_over(tmp_path: Path) -> None:
    engine = make_engine(sqlite_url(tmp_path))
    migrate(engine)
    writer = EventWriter(JobLog(engine))
    heard: list[tuple[str, JobEvent]] = []
    writer.listeners.append(lambda namespace, event: heard.append((namespace, event)))

    async def scenario() -> None:
        futures = [writer.append("ns", "job-1", "JobSubmitted", {"spec": {"params": {}}})]
        futures += [writer.append("ns", "job-1", "MetricLogged",
                                  {"name": "x", "value": float(i), "step": i})
                    for i in range(200)]
        refused = writer.append("ns", "job-1", "MetricLogged", {"name": "x"})  # no value
        await asyncio.gather(*futures)
        with pytest.raises(BadRequest):
            await refused
        await asyncio.sleep(0)  # the last done-callbacks run on the loop's next turn

    asyncio.run(scenario())
    writer.close()
    stored = JobLog(engine).events("ns", "job-1")
    assert [event.seq for event in stored] == list(range(1, 202))
    assert [event.data["value"] for event in stored[1:]] == [float(i) for i in range(200)]
    assert [event for _, event in heard] == stored  # the refused one is not heard
    assert {namespace for namespace, _ in heard} == {"ns"}
    engine.dispose()
