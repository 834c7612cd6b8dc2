"""The queue in Redis (``queue: redis://...``): Streams as the delivery log, a hash per
invocation as its record, sorted sets where a stream does not fit.

Keys, under a prefix (``stratus`` by default):

- ``inv:{id}``: the record, a hash of AsyncInvocation's fields (absent field: None), with its
  ``seq`` and, while it waits in a stream, the stream and entry id that deliver it.
- ``stream:{ns}:{deployment}:{priority}``: one stream per priority level of a deployment, with
  one consumer group; a claim reads the levels from ``prios:{ns}:{deployment}`` (a sorted
  set) highest first with XREADGROUP, so priority is strict and each level is first in,
  first out. The consumer is the claiming owner, so XPENDING shows who runs what.
- ``delayed:{ns}:{deployment}``: invocations whose ``not_before`` has not come (retries with
  backoff, delayed submissions), scored by it; a claim first moves the due ones to their
  stream.
- ``leases``: running invocations scored by ``lease_until``. Recovery goes by it, not by
  XAUTOCLAIM's idle time, because the queue's clock is the caller's (injected) clock: an
  expired lease's entry is acknowledged and deleted, and a new entry is added for any
  consumer to read.
- ``expiry`` (queued, by ``expires_at``), ``done`` and ``dead`` (terminal, by
  ``finished_at``; ``dlq:{ns}:{deployment}`` per deployment): what expire, purge and redrive
  read. ``pending``: a hash of queued counts per (namespace, deployment).
- ``list:{ns}`` and ``listdep:{ns}:{deployment}``, scored by ``seq``: the listing, newest first.
- ``idem:{ns}:{key}``: the invocation an idempotency key names.

Every step that touches more than one key is one Lua script (``redis_scripts``), so Redis
runs it whole and alone: a claim cannot hand one entry to two owners, a finish cannot
acknowledge a delivery without recording the outcome, and two repeats of an idempotency key
cannot both insert. The scripts build their key names from the prefix, which a Redis Cluster
would refuse; this backend is for one Redis server (with its replicas).

Durability is Redis's: a write is acknowledged once Redis applied it in memory; it survives a
Stratus crash, and a Redis crash only as far as its persistence (``appendonly yes`` with
``appendfsync everysec`` loses up to a second; RDB snapshots alone lose up to the interval).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import msgpack
import redis.asyncio as aioredis

from stratus.errors import Conflict, IdempotencyConflict
from stratus.queue import redis_scripts as lua
from stratus.queue.records import (
    IDEMPOTENCY_WINDOW_S,
    AsyncInvocation,
    NewInvocation,
    Page,
    Status,
)
from stratus.queue.shared import (
    EXPIRED_ERROR,
    created_record,
    decode_cursor,
    encode_cursor,
)

_FLOATS = ("created_at", "updated_at", "not_before", "expires_at", "started_at", "finished_at",
           "progress", "lease_until")
_INTS = ("priority", "attempts", "max_attempts", "revision", "pinned_revision")
_TEXTS = ("id", "namespace", "deployment", "progress_message", "idempotency_key", "digest",
          "lease_owner")
_BYTES = ("payload", "result")
_JSONS = ("error", "source")
PURGE_BATCH = 500
MAX_CONNECTIONS = 32


def _text(value: float | int | str) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _parse(flat: Sequence[bytes]) -> tuple[AsyncInvocation, int]:
    """A record from HGETALL's name, value list; and its seq."""
    raw = {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}
    values: dict[str, Any] = {}
    for name in _FLOATS:
        values[name] = float(raw[name]) if name in raw else None
    for name in _INTS:
        values[name] = int(raw[name]) if name in raw else None
    for name in _TEXTS:
        values[name] = raw[name].decode() if name in raw else None
    for name in _BYTES:
        values[name] = raw.get(name)
    for name in _JSONS:
        values[name] = json.loads(raw[name]) if name in raw else None
    values["status"] = Status(raw["status"].decode())
    values["source"] = values["source"] or {}
    return AsyncInvocation(**values), int(raw["seq"])


def _fields(record: AsyncInvocation) -> list[Any]:
    """The record as HSET's name, value list, without its None fields."""
    out: list[Any] = []
    for name in (*_FLOATS, *_INTS, *_TEXTS, *_BYTES, *_JSONS, "status"):
        value = getattr(record, name)
        if value is None:
            continue
        if name in _JSONS:
            value = json.dumps(value, separators=(",", ":"))
        elif name == "status":
            value = value.value
        elif not isinstance(value, bytes):
            value = _text(value)
        out += [name, value]
    return out


class RedisQueue:
    """InvocationQueue on one Redis server, with redis.asyncio."""

    def __init__(self, url: str, prefix: str = "stratus") -> None:
        # A burst of enqueues waits for one of the pool's connections rather than failing.
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=MAX_CONNECTIONS)
        self._redis: aioredis.Redis = aioredis.Redis(connection_pool=pool)
        self._prefix = prefix
        register = self._redis.register_script
        self._enqueue, self._claim, self._held = (
            register(lua.ENQUEUE), register(lua.CLAIM), register(lua.HELD))
        self._cancel, self._renew, self._progress = (
            register(lua.CANCEL), register(lua.RENEW), register(lua.PROGRESS))
        self._redrive, self._recover, self._expire, self._purge = (
            register(lua.REDRIVE), register(lua.RECOVER), register(lua.EXPIRE),
            register(lua.PURGE))

    async def open(self) -> None:
        await self._redis.ping()  # fail at start-up, not at the first 202

    async def close(self) -> None:
        await self._redis.aclose(close_connection_pool=True)

    async def enqueue(self, new: NewInvocation, now: float) -> tuple[AsyncInvocation, bool]:
        record = created_record(new, now)
        reply = await self._enqueue(args=[
            self._prefix, _text(now), _text(now - IDEMPOTENCY_WINDOW_S), new.id, new.namespace,
            new.deployment, new.idempotency_key or "",
            "" if record.lease_until is None else _text(record.lease_until), *_fields(record)])
        if reply[0] == 1:
            return record, True
        if reply[0] == 2:
            raise Conflict(f"invocation {new.id} already exists")
        existing, _ = _parse(_unpack(reply[1]))
        if existing.digest != new.digest:
            raise IdempotencyConflict(
                f"idempotency key {new.idempotency_key!r} was used for invocation "
                f"{existing.id} with another body")
        return existing, False

    async def claim(self, owner: str, namespace: str, deployment: str, limit: int, now: float,
                    lease_s: float) -> list[AsyncInvocation]:
        if limit <= 0:
            return []
        replies = await self._claim(args=[self._prefix, namespace, deployment, owner, limit,
                                          _text(now), _text(now + lease_s)])
        return [_parse(flat)[0] for flat in _unpack(replies)]

    async def renew(self, owner: str, ids: Sequence[str], until: float) -> None:
        if ids:
            await self._renew(args=[self._prefix, owner, _text(until), *ids])

    async def _end(self, owner: str, invocation_id: str, status: Status, now: float,
                   values: dict[str, Any]) -> AsyncInvocation | None:
        sets: list[Any] = []
        drops: list[str] = []
        for name, value in values.items():
            if value is None:
                drops.append(name)
            else:
                sets += [name, value if isinstance(value, bytes | str) else
                         json.dumps(value, separators=(",", ":")) if isinstance(value, dict)
                         else _text(value)]
        reply = await self._held(args=[self._prefix, invocation_id, owner, status.value,
                                       _text(now), len(sets) // 2, *sets, *drops])
        return None if reply is None else _parse(_unpack(reply))[0]

    async def finish(self, owner: str, invocation_id: str, status: Status, now: float, *,
                     result: bytes | None = None, error: dict[str, Any] | None = None,
                     revision: int | None = None) -> AsyncInvocation | None:
        if status not in (Status.SUCCEEDED, Status.FAILED, Status.DEAD, Status.CANCELLED):
            raise ValueError(f"finish() ends an attempt; {status} is not an end")
        return await self._end(owner, invocation_id, status, now, {
            "finished_at": now, "updated_at": now, "result": result, "error": error,
            "revision": revision})

    async def end(self, owner: str, invocation_id: str, status: Status, now: float, *,
                  result: bytes | None = None, error: dict[str, Any] | None = None,
                  revision: int | None = None) -> bool:
        # One script either way: it returns the record with no extra round trip.
        return await self.finish(owner, invocation_id, status, now, result=result,
                                 error=error, revision=revision) is not None

    async def retry(self, owner: str, invocation_id: str, now: float, not_before: float,
                    error: dict[str, Any], revision: int | None = None) -> AsyncInvocation | None:
        return await self._end(owner, invocation_id, Status.QUEUED, now, {
            "not_before": not_before, "updated_at": now, "error": error, "revision": revision})

    async def set_progress(self, invocation_id: str, fraction: float, message: str | None,
                           now: float) -> None:
        args: list[Any] = [self._prefix, invocation_id, _text(float(fraction)), _text(now)]
        if message is not None:
            args.append(message)
        await self._progress(args=args)

    async def get(self, namespace: str, invocation_id: str) -> AsyncInvocation | None:
        flat: Any = await self._redis.hgetall(
            f"{self._prefix}:inv:{invocation_id}")
        if not flat:
            return None
        record, _ = _parse(_flatten(flat))
        return record if record.namespace == namespace else None

    async def page(self, namespace: str, *, deployment: str | None = None,
                   status: Status | None = None, limit: int = 50,
                   cursor: str | None = None) -> Page:
        limit = max(1, limit)
        index = (f"{self._prefix}:list:{namespace}" if deployment is None
                 else f"{self._prefix}:listdep:{namespace}:{deployment}")
        top = "+inf" if cursor is None else f"({decode_cursor(cursor)}"
        found: list[tuple[AsyncInvocation, int]] = []
        chunk = limit + 1 if status is None else max(100, limit + 1)
        while len(found) <= limit:
            ids: Any = await self._redis.zrevrangebyscore(index, top, "-inf", start=0, num=chunk,
                                                     withscores=True)
            if not ids:
                break
            async with self._redis.pipeline(transaction=False) as pipe:
                for member, _ in ids:
                    pipe.hgetall(f"{self._prefix}:inv:{member.decode()}")
                replies = await pipe.execute()
            for flat in replies:
                if not flat:
                    continue  # purged meanwhile
                record, seq = _parse(_flatten(flat))
                if status is None or record.status is status:
                    found.append((record, seq))
            top = f"({int(ids[-1][1])}"
        more = len(found) > limit
        found = found[:limit]
        return Page([record for record, _ in found],
                    encode_cursor(found[-1][1]) if more else None)

    async def cancel(self, namespace: str, invocation_id: str,
                     now: float) -> AsyncInvocation | None:
        reply = await self._cancel(args=[self._prefix, namespace, invocation_id, _text(now)])
        return None if reply is None else _parse(_unpack(reply))[0]

    async def redrive(self, namespace: str, deployment: str, ids: Sequence[str] | None,
                      now: float, expires_at: float) -> list[str]:
        if ids is not None and not ids:
            return []
        moved = await self._redrive(args=[
            self._prefix, namespace, deployment, _text(now), _text(expires_at),
            "1" if ids is None else "0", *(ids or ())])
        return [value.decode() for value in moved]

    async def recover(self, now: float) -> int:
        return int(await self._recover(args=[self._prefix, _text(now)]))

    async def pending(self, now: float) -> dict[tuple[str, str], int]:
        counts: Any = await self._redis.hgetall(
            f"{self._prefix}:pending")
        out: dict[tuple[str, str], int] = {}
        for field, count in counts.items():
            namespace, _, deployment = field.decode().partition("\0")
            if int(count) > 0:
                out[(namespace, deployment)] = int(count)
        return out

    async def expire(self, now: float) -> list[AsyncInvocation]:
        replies = await self._expire(args=[self._prefix, _text(now),
                                           json.dumps(EXPIRED_ERROR, separators=(",", ":"))])
        return [_parse(flat)[0] for flat in _unpack(replies)]

    async def purge(self, finished_before: float, dead_before: float) -> int:
        total = 0
        while True:
            count = int(await self._purge(args=[self._prefix, _text(finished_before),
                                                _text(dead_before), PURGE_BATCH]))
            total += count
            if count < PURGE_BATCH:
                return total


def _unpack(packed: bytes) -> list[Any]:
    """A script's msgpack'd reply: a record's name, value list, or a list of them (Lua's empty
    table packs as an empty map)."""
    value = msgpack.unpackb(packed, raw=True)
    return [] if value == {} else list(value)


def _flatten(reply: Any) -> list[bytes]:
    """HGETALL through execute_command comes back as a dict in RESP2's parser: make it the
    name, value list the scripts return."""
    if isinstance(reply, dict):
        return [item for pair in reply.items() for item in pair]
    return list(reply)
