"""The control plane's metadata writes: queued in order and run one at a time off the event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from stratus.store.metadata import MetadataStore

log = logging.getLogger("stratus.controller")

T = TypeVar("T")

# A write and, when its caller awaits it, the future for its result. A flush is a future
# without a write.
_Item = tuple[Callable[[], Any] | None, "asyncio.Future[Any] | None"]


class MetadataWrites:
    """The store writes that the router and the reconciler make as things happen. They return
    at once; ``run`` (a task of the controller) applies them in the order they were made."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()

    def set_routing(self, namespace: str, name: str, routing: dict[str, Any]) -> None:
        self._queue.put_nowait((lambda: self.store.set_routing(namespace, name, routing), None))

    def set_revision_status(self, namespace: str, name: str, number: int, status: str,
                            reason: str | None) -> None:
        self._queue.put_nowait((
            lambda: self.store.set_revision_status(namespace, name, number, status, reason),
            None))

    async def call(self, write: Callable[[], T]) -> T:
        """Run ``write`` in its turn, after the writes queued before it, and return its result
        (or raise its error). A deploy's record and a deletion go this way, so that a routing
        write queued before ``rm`` cannot land on the deployment re-created after it."""
        answer: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((write, answer))
        return await answer

    async def flush(self) -> None:
        """Wait until the writes made before this call are stored: a deploy is answered only
        once its routing is, so a crash (kill -9) right after the answer keeps what it said.
        Raises the first error of those writes since the last flush (a full disk's 507)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((None, done))
        await done

    async def run(self) -> None:
        failed: Exception | None = None
        while True:
            write, answer = await self._queue.get()
            if write is None:
                assert answer is not None
                if not answer.done():  # else its deploy was cancelled meanwhile
                    if failed is None:
                        answer.set_result(None)
                    else:
                        answer.set_exception(failed)
                failed = None
                continue
            try:
                value = await asyncio.to_thread(write)
            except Exception as exc:
                if answer is not None:  # its caller hears of it (a quota's 403, say)
                    if not answer.done():
                        answer.set_exception(exc)
                    continue
                log.exception("metadata write failed")
                failed = failed or exc
            else:
                if answer is not None and not answer.done():
                    answer.set_result(value)
