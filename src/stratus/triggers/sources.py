"""External queue sources: their rules on creation, and one consumer task per source, started
with the server and on creation, stopped on deletion and at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from redis import exceptions as redis_errors

from stratus.errors import BadRequest
from stratus.store.triggers import Source, TriggerStore, redacted
from stratus.triggers.names import check_name
from stratus.triggers.streams import KIND, StreamConfig, StreamConsumer, connect, consumer_name, ensure_group
from stratus.triggers.submitter import DeploymentCheck, Submitter

log = logging.getLogger("stratus.triggers")


class Sources:
    def __init__(self, store: TriggerStore, submitter: Submitter, check: DeploymentCheck,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.submitter = submitter
        self.check = check
        self.clock = clock
        self.consumer = consumer_name()
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}

    async def create(self, namespace: str, name: str, kind: str, config: dict[str, Any],
                     deployment: str) -> dict[str, Any]:
        check_name("source", name)
        if kind != KIND:
            raise BadRequest(f"kind {kind!r} is not supported; the one kind is {KIND!r}")
        stream = StreamConfig.of(config)
        if urlsplit(stream.url).scheme not in ("redis", "rediss", "unix"):
            raise BadRequest("url is a redis://, rediss:// or unix:// URL")
        if not stream.stream or not stream.group:
            raise BadRequest("stream and group are non-empty")
        self.check(namespace, deployment)  # NotFound (404)
        # The group is made now, not when the consumer first runs: an entry added as soon as
        # the source exists is read (the group starts at the stream's end).
        client = connect(stream.url)
        try:
            await ensure_group(client, stream)
        except (redis_errors.RedisError, OSError) as exc:
            raise BadRequest(f"cannot create group {stream.group!r} on stream {stream.stream!r} "
                             f"at {redacted(stream.url)}: {exc}") from None
        finally:
            await client.aclose()
        source = await asyncio.to_thread(self.store.add_source, namespace, name, kind, config,
                                         deployment, self.clock())
        self._start(source)
        return source.view()

    async def ls(self, namespace: str) -> list[dict[str, Any]]:
        return [source.view() for source in await asyncio.to_thread(self.store.sources, namespace)]

    async def delete(self, namespace: str, name: str) -> None:
        await asyncio.to_thread(self.store.delete_source, namespace, name)
        await self._stop((namespace, name))

    def _start(self, source: Source) -> None:
        consumer = StreamConsumer(source, self.submitter, self.consumer)
        self._tasks[(source.namespace, source.name)] = asyncio.create_task(
            consumer.run(), name=f"source {source.namespace}/{source.name}")

    async def _stop(self, key: tuple[str, str]) -> None:
        task = self._tasks.pop(key, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def start(self) -> None:
        for source in await asyncio.to_thread(self.store.sources):
            self._start(source)

    async def close(self) -> None:
        for key in list(self._tasks):
            await self._stop(key)
