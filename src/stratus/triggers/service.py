"""The triggers together, as the server starts and stops them and the routes reach them."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Engine

from stratus.store.triggers import TriggerStore
from stratus.triggers.schedules import Schedules
from stratus.triggers.sources import Sources
from stratus.triggers.submitter import DeploymentCheck, Submitter
from stratus.triggers.topics import Topics


class Triggers:
    """Schedules, topics and sources over one store. ``check`` raises NotFound for a
    deployment a namespace does not have (the controller's ``get_unit``)."""

    def __init__(self, engine: Engine, submitter: Submitter, check: DeploymentCheck,
                 clock: Callable[[], float] = time.time) -> None:
        store = TriggerStore(engine)
        self.schedules = Schedules(store, submitter, check, clock)
        self.topics = Topics(store, submitter, check, clock)
        self.sources = Sources(store, submitter, check, clock)

    async def start(self) -> None:
        await self.schedules.start()
        await self.sources.start()

    async def close(self) -> None:
        await self.sources.close()
        await self.schedules.close()
