"""API keys: minting (shown once), hashing, and the in-memory key ring checked per request.

A key reads ``sk_<12 hex id>_<secret>``. The id is the visible prefix that names the key in
listings and the audit log; only a sha256 of the secret is stored. Secrets carry 256 bits of
entropy, so a fast hash is enough: there is nothing to brute-force that a slow one protects.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from stratus.resilience.priority import Priority
from stratus.security.roles import GLOBAL_NAMESPACE, Role

log = logging.getLogger("stratus.keys")

KEY_MARK = b"sk_"
ID_HEX = 12
REFRESH_S = 5.0  # how soon a key changed through another server takes effect here


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str  # the visible prefix, e.g. ``sk_3f9a2c71d0e4``
    secret_hash: str  # sha256 hex of the secret part
    namespace: str  # ``*`` for a global key
    role: str
    description: str
    rate_limit_rps: float | None
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    # The key's requests' priority under load shedding without a header, and the most they
    # may ask for: set by the admin who creates the key, so a client cannot raise its own.
    priority: Priority = Priority.NORMAL


class KeyRecords(Protocol):
    """Where key records are kept (``store.keys.KeyStore``); called off the event loop."""

    def add(self, record: KeyRecord) -> None: ...

    def all(self) -> list[KeyRecord]: ...

    def revoke(self, key_id: str, at: datetime) -> bool:
        """Marks the key revoked; False when there is no such key or it was revoked already."""
        ...


@dataclass(frozen=True, slots=True)
class Minted:
    key: str  # the whole key: returned once, never stored
    record: KeyRecord


def hash_secret(secret: bytes) -> str:
    return hashlib.sha256(secret).hexdigest()


def mint(namespace: str, role: Role, *, created_by: str, description: str = "",
         expires_in_s: float | None = None, rate_limit_rps: float | None = None,
         priority: Priority = Priority.NORMAL, now: datetime | None = None) -> Minted:
    if namespace == GLOBAL_NAMESPACE and role is not Role.ADMIN:
        raise ValueError("only an admin key can be global")
    key_id = KEY_MARK.decode() + secrets.token_hex(ID_HEX // 2)
    secret = secrets.token_urlsafe(32)
    now = now or datetime.now(UTC)
    expires = now + timedelta(seconds=expires_in_s) if expires_in_s is not None else None
    record = KeyRecord(key_id, hash_secret(secret.encode()), namespace, role.value, description,
                       rate_limit_rps, created_by, now, expires, None, priority)
    return Minted(f"{key_id}_{secret}", record)


def split_key(token: bytes) -> tuple[str, bytes] | None:
    """(id, secret) of a token shaped like a key, else None."""
    head = len(KEY_MARK) + ID_HEX
    if not token.startswith(KEY_MARK) or len(token) < head + 2 or token[head:head + 1] != b"_":
        return None
    return token[:head].decode("ascii", errors="replace"), token[head + 1:]


@dataclass(frozen=True, slots=True)
class _Entry:
    record: KeyRecord
    expires_at: float | None  # Unix seconds, for a cheap comparison per request


def _entry(record: KeyRecord) -> _Entry:
    return _Entry(record, record.expires_at.timestamp() if record.expires_at else None)


class KeyRing:
    """Every key's record in memory, so that checking a key costs a dict lookup and a hash."""

    def __init__(self, records: list[KeyRecord] | None = None) -> None:
        self._entries: dict[str, _Entry] = {}
        self.replace(records or [])

    def replace(self, records: list[KeyRecord]) -> None:
        self._entries = {record.id: _entry(record) for record in records}

    def put(self, record: KeyRecord) -> None:
        self._entries[record.id] = _entry(record)

    def get(self, key_id: str) -> KeyRecord | None:
        entry = self._entries.get(key_id)
        return entry.record if entry is not None else None

    def records(self) -> list[KeyRecord]:
        return [entry.record for entry in self._entries.values()]

    def check(self, token: bytes, now: float | None = None) -> KeyRecord | str:
        """The key's record, or why the token is refused (never saying whether the id exists)."""
        parts = split_key(token)
        if parts is None:
            return "malformed API key"
        key_id, secret = parts
        entry = self._entries.get(key_id)
        if entry is None or not hmac.compare_digest(hash_secret(secret), entry.record.secret_hash):
            return "invalid API key"
        if entry.record.revoked_at is not None:
            return "API key revoked"
        if entry.expires_at is not None and (time.time() if now is None else now) >= entry.expires_at:
            return "API key expired"
        return entry.record


class KeyService:
    """Keys as the API manages them: the store of record plus the ring that requests check.

    The ring is reloaded from the store every ``refresh_s`` so that keys created or revoked
    through another server sharing the database take effect here too.
    """

    def __init__(self, store: KeyRecords, ring: KeyRing, refresh_s: float = REFRESH_S) -> None:
        self.store = store
        self.ring = ring
        self.refresh_s = refresh_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.ring.replace(await asyncio.to_thread(self.store.all))
        self._task = asyncio.create_task(self._refreshing(), name="key-refresh")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def create(self, minted: Minted) -> None:
        await asyncio.to_thread(self.store.add, minted.record)
        self.ring.put(minted.record)

    async def revoke(self, key_id: str) -> KeyRecord | None:
        """The revoked key's record, or None when there is no such key."""
        record = self.ring.get(key_id)
        if record is None:
            return None
        at = datetime.now(UTC)
        await asyncio.to_thread(self.store.revoke, key_id, at)
        revoked = replace(record, revoked_at=record.revoked_at or at)
        self.ring.put(revoked)
        return revoked

    async def _refreshing(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                self.ring.replace(await asyncio.to_thread(self.store.all))
            except Exception:
                log.exception("could not reload the API keys; keeping the ones in memory")


def key_view(record: KeyRecord) -> dict[str, Any]:
    """What the API shows of a key: never the secret, never its hash."""
    now = datetime.now(UTC)
    state = ("revoked" if record.revoked_at is not None
             else "expired" if record.expires_at is not None and record.expires_at <= now
             else "active")
    return {
        "id": record.id, "namespace": record.namespace, "role": record.role,
        "description": record.description, "rate_limit_rps": record.rate_limit_rps,
        "priority": record.priority.name.lower(),
        "created_by": record.created_by, "created_at": record.created_at.isoformat(),
        "expires_at": record.expires_at.isoformat() if record.expires_at else None,
        "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
        "state": state,
    }
