"""The control plane's metadata writes: queued in order and run one at a time off the event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from stratus.store.metadata import MetadataStore

log = logging.getLogger("stratus.controller")

T = TypeVar("T")
DRAIN_S = 10.0  # at a stop, for the queued writes to be stored

Key = tuple[str, str]  # (namespace, deployment)
# A write, the deployment it is for, and, when its caller awaits it, the future for its
# result. A flush is a future without a write.
_Item = tuple[Callable[[], Any] | None, Key, "asyncio.Future[Any] | None"]


class MetadataWrites:
    """The store writes that the router and the reconciler make as things happen. They return
    at once; ``run`` (a task of the controller) applies them in the order they were made."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()

    def set_routing(self, namespace: str, name: str, routing: dict[str, Any]) -> None:
        self._queue.put_nowait((lambda: self.store.set_routing(namespace, name, routing),
                                (namespace, name), None))

    def set_revision_status(self, namespace: str, name: str, number: int, status: str,
                            reason: str | None) -> None:
        self._queue.put_nowait((
            lambda: self.store.set_revision_status(namespace, name, number, status, reason),
            (namespace, name), None))

    async def call(self, key: Key, write: Callable[[], T]) -> T:
        """Run ``write`` in its turn, after the writes queued before it, and return its result
        (or raise its error). A deploy's record and a deletion go this way, so that a routing
        write queued before ``rm`` cannot land on the deployment re-created after it."""
        answer: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((write, key, answer))
        return await answer

    async def flush(self, key: Key) -> None:
        """Wait until the writes made before this call are stored: a change is answered only
        once its routing is, so a crash (kill -9) right after the answer keeps what it said.
        Raises the error of the deployment's last failed write, unless a later write of it
        succeeded (a full disk's 507); another deployment's failures are its own."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((None, key, done))
        await done

    async def drain(self, within: float = DRAIN_S) -> None:
        """Apply what is queued (at a stop, before ``run`` is cancelled); a store that hangs
        holds the stop for ``within`` seconds at most (TimeoutError)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((None, ("", ""), done))
        await asyncio.wait_for(asyncio.shield(done), within)

    async def run(self) -> None:
        failed: dict[Key, Exception] = {}
        while True:
            write, key, answer = await self._queue.get()
            if write is None:
                assert answer is not None
                error = failed.pop(key, None)
                if not answer.done():  # else its caller was cancelled meanwhile
                    if error is None:
                        answer.set_result(None)
                    else:
                        answer.set_exception(error)
                continue
            try:
                value = await asyncio.to_thread(write)
            except Exception as exc:
                if answer is not None:  # its caller hears of it (a quota's 403, say)
                    if not answer.done():
                        answer.set_exception(exc)
                    continue
                log.exception("metadata write failed")
                failed[key] = exc
            else:
                failed.pop(key, None)  # what is stored now supersedes the failed write
                if answer is not None and not answer.done():
                    answer.set_result(value)
