"""The control plane's queued metadata writes on a real SQLite store: in order, a deployment's
failed write reported to its own flush only, calls in their turn, and a drain at the stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from stratus.control.writes import MetadataWrites
from stratus.spec import RuntimeSpec, ScalingSpec
from stratus.store.db import make_engine, migrate, sqlite_url
from stratus.store.metadata import MetadataStore

RUNTIME = RuntimeSpec(bundle="a" * 64, entrypoint="app.py:Echo")


class Refusing:
    """Fails the UPDATE statements whose parameters name ``name`` (a fault injected at the
    driver, as a full disk would fail them), while ``on``."""

    def __init__(self, name: str) -> None:
        self.name, self.on = name, True

    def __call__(self, _conn: object, _cursor: object, statement: str, parameters: Any,
                 *_rest: object) -> None:
        if self.on and statement.lstrip().upper().startswith("UPDATE") \
                and self.name in map(str, parameters):
            raise OSError(f"refused a write of {self.name}")


@pytest.fixture
async def writes(tmp_path: Path) -> AsyncIterator[MetadataWrites]:
    engine = make_engine(sqlite_url(tmp_path))
    migrate(engine)
    store = MetadataStore(engine)
    for name in ("sick", "well"):
        store.apply("default", name, RUNTIME, ScalingSpec(), {})
    queue = MetadataWrites(store)
    runner = asyncio.create_task(queue.run())
    yield queue
    runner.cancel()
    engine.dispose()


def _routing(store: MetadataStore, name: str) -> Any:
    record = store.get_deployment("default", name)
    assert record is not None
    return record.routing


async def test_a_failed_write_is_reported_to_its_own_deployments_flush_only(
        writes: MetadataWrites) -> None:
    refusing = Refusing("sick")
    event.listen(writes.store.engine, "before_cursor_execute", refusing)
    writes.set_routing("default", "sick", {"stable": 1, "traffic": {"1": 100}})
    writes.set_routing("default", "well", {"stable": 1, "traffic": {"1": 100}})
    await writes.flush(("default", "well"))  # the other deployment's failure is not its own
    assert _routing(writes.store, "well") == {"stable": 1, "traffic": {"1": 100}}
    with pytest.raises(Exception, match="refused a write of sick"):
        await writes.flush(("default", "sick"))
    await writes.flush(("default", "sick"))  # reported once

    writes.set_routing("default", "sick", {"stable": 1, "traffic": {"1": 50}})
    refusing.on = False
    writes.set_routing("default", "sick", {"stable": 1, "traffic": {"1": 100}})
    await writes.flush(("default", "sick"))  # a later write that was stored supersedes it
    assert _routing(writes.store, "sick") == {"stable": 1, "traffic": {"1": 100}}


async def test_a_call_runs_after_what_was_queued_and_its_error_is_its_callers(
        writes: MetadataWrites) -> None:
    key = ("default", "sick")
    writes.set_routing("default", "sick", {"stable": 7})
    seen = await writes.call(key, lambda: _routing(writes.store, "sick"))
    assert seen == {"stable": 7}

    def refuse() -> None:
        raise PermissionError("over quota")

    with pytest.raises(PermissionError):
        await writes.call(key, refuse)
    await writes.flush(key)  # a call's error went to its caller, not to the next flush
    assert await writes.call(key, lambda: writes.store.delete_deployment("default", "sick"))
    writes.set_routing("default", "sick", {"stable": 8})  # after rm: changes nothing
    await writes.flush(key)
    assert writes.store.get_deployment("default", "sick") is None


async def test_a_drain_stores_what_was_queued(writes: MetadataWrites) -> None:
    for weight in range(20):
        writes.set_routing("default", "well", {"stable": 1, "weight": weight})
    await writes.drain()
    assert _routing(writes.store, "well") == {"stable": 1, "weight": 19}
