"""Picks the queue backend from the ``queue:`` setting (STRATUS_QUEUE_URL)."""

from __future__ import annotations

from sqlalchemy import Engine

from stratus.queue.base import InvocationQueue
from stratus.queue.redis import RedisQueue
from stratus.queue.sql import SqlQueue


def open_queue(url: str | None, engine: Engine) -> InvocationQueue:
    """None or "": the metadata store's own database (SQLite or PostgreSQL, whichever it is);
    ``redis://`` or ``rediss://``: Redis Streams. The caller awaits ``open()`` on it."""
    if not url:
        return SqlQueue(engine)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisQueue(url)
    scheme = url.split("://", 1)[0] if "://" in url else url
    raise ValueError(
        f"unsupported queue URL scheme {scheme!r}: leave `queue:` unset to keep "
        "the queue in the metadata store, or give a redis://host:port/db URL")
