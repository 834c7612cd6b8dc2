"""The control plane's metadata writes: queued in order and run one at a time off the event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from stratus.store.metadata import MetadataStore

log = logging.getLogger("stratus.controller")


class MetadataWrites:
    """The store writes that the router and the reconciler make as things happen. They return
    at once; ``run`` (a task of the controller) applies them in the order they were made."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store
        self._queue: asyncio.Queue[Callable[[], object]] = asyncio.Queue()

    def set_routing(self, namespace: str, name: str, routing: dict[str, Any]) -> None:
        self._queue.put_nowait(lambda: self.store.set_routing(namespace, name, routing))

    def set_revision_status(self, namespace: str, name: str, number: int, status: str,
                            reason: str | None) -> None:
        self._queue.put_nowait(
            lambda: self.store.set_revision_status(namespace, name, number, status, reason))

    async def run(self) -> None:
        while True:
            write = await self._queue.get()
            try:
                await asyncio.to_thread(write)
            except Exception:
                log.exception("metadata write failed")
