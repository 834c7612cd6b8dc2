"""A Redis Stream as a source: a consumer group reads it, each entry becomes an async invocation
(keyed by source and entry id), and the entry is XACKed only once that invocation succeeded or
went dead to the DLQ. Entries left pending by a dead consumer are taken over with XAUTOCLAIM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from stratus.queue.records import Status
from stratus.store.triggers import Source, redacted
from stratus.triggers.submitter import Submitter

log = logging.getLogger("stratus.triggers")
KIND = "redis-stream"
BLOCK_MS = 1000  # one XREADGROUP waits this long for new entries
WAIT_S = 30.0  # one AsyncService.wait; repeated until the invocation ends
BACKOFF_S = (0.5, 1.0, 2.0, 5.0)  # between reconnections to an unreachable Redis
ACKED = frozenset({Status.SUCCEEDED, Status.DEAD})  # a dead one is in the DLQ: redrive there


@dataclass(frozen=True, slots=True)
class StreamConfig:
    url: str
    stream: str
    group: str
    batch: int  # entries in flight at once
    claim_idle_s: float  # a pending entry idle this long is taken over

    @classmethod
    def of(cls, config: dict[str, Any]) -> StreamConfig:
        return cls(str(config["url"]), str(config["stream"]), str(config["group"]),
                   int(config["batch"]), float(config["claim_idle_s"]))


def consumer_name() -> str:
    """This process's consumer in the group: a restarted server is another consumer, which
    takes over the entries its predecessor left pending, once idle long enough."""
    return f"stratus-{socket.gethostname()}-{os.getpid()}"


def entry_key(source: str, entry_id: str) -> str:
    return f"stream:{source}:{entry_id}"


async def ensure_group(client: Redis, config: StreamConfig) -> None:
    """XGROUP CREATE ... $ MKSTREAM; an existing group is kept as it is."""
    try:
        await client.xgroup_create(config.stream, config.group, id="$", mkstream=True)
    except redis_errors.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def connect(url: str) -> Redis:
    client: Redis = Redis.from_url(url, decode_responses=True, socket_connect_timeout=5,
                                   health_check_interval=30)
    return client


class StreamConsumer:
    """Consumes one source until cancelled."""

    def __init__(self, source: Source, submitter: Submitter, consumer: str) -> None:
        self.source = source
        self.config = StreamConfig.of(source.config)
        self.submitter = submitter
        self.consumer = consumer
        self._inflight: dict[str, asyncio.Task[None]] = {}

    async def run(self) -> None:
        failures = 0
        while True:
            client = connect(self.config.url)
            try:
                await ensure_group(client, self.config)
                failures = 0
                await self._consume(client)
            except Exception as exc:  # Redis away, the stream deleted under us...: again later
                delay = BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]
                failures += 1
                log.warning("source %s/%s (%s): %s; again in %.1fs", self.source.namespace,
                            self.source.name, redacted(self.config.url), exc, delay)
                await asyncio.sleep(delay)
            finally:
                await self._drain()
                await client.aclose()

    async def _drain(self) -> None:
        for task in self._inflight.values():
            task.cancel()
        for task in list(self._inflight.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._inflight.clear()

    async def _consume(self, client: Redis) -> None:
        cursor = "0-0"
        config = self.config
        while True:
            room = config.batch - len(self._inflight)
            if room <= 0:
                await asyncio.wait(list(self._inflight.values()),
                                   return_when=asyncio.FIRST_COMPLETED)
                continue
            # Entries another (dead) consumer left pending, idle long enough.
            claimed = await client.xautoclaim(config.stream, config.group, self.consumer,
                                              int(config.claim_idle_s * 1000), cursor,
                                              count=room)
            cursor = str(claimed[0])
            taken = [(entry_id, fields) for entry_id, fields in claimed[1]
                     if fields is not None and entry_id not in self._inflight]
            if not taken:
                read: Any = await client.xreadgroup(config.group, self.consumer,
                                               {config.stream: ">"}, count=room, block=BLOCK_MS)
                taken = [entry for _stream, entries in (read or []) for entry in entries]
            for entry_id, fields in taken:
                task = asyncio.create_task(self._handle(client, entry_id, fields),
                                           name=f"source {self.source.name} {entry_id}")
                self._inflight[entry_id] = task
                task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight = {key: kept for key, kept in self._inflight.items() if kept is not task}

    async def _handle(self, client: Redis, entry_id: str, fields: dict[str, str]) -> None:
        source = self.source
        try:
            record, _created = await self.submitter.submit(
                source.namespace, source.deployment, json.dumps(fields).encode(),
                source={"kind": "stream", "source": source.name, "stream": self.config.stream,
                        "entry": entry_id},
                idempotency_key=entry_key(source.name, entry_id))
            while not record.terminal:
                record = await self.submitter.wait(source.namespace, record.id, WAIT_S)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # left pending: taken over again once idle
            log.warning("source %s/%s: entry %s not invoked: %s", source.namespace, source.name,
                        entry_id, exc)
            return
        if record.status in ACKED:
            await client.xack(self.config.stream, self.config.group, entry_id)
        else:
            log.warning("source %s/%s: entry %s left pending: invocation %s %s",
                        source.namespace, source.name, entry_id, record.id, record.status.value)
