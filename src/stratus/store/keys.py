"""The API keys' table: public id, secret hash, scope, expiry and revocation; never the secret."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime, Engine, Float, String, select, update
from sqlalchemy.orm import Mapped, mapped_column, sessionmaker

from stratus.resilience.priority import Priority, priority_named
from stratus.security.keys import KeyRecord
from stratus.store.tables import Base


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    namespace: Mapped[str] = mapped_column(String(63), nullable=False, index=True)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    description: Mapped[str] = mapped_column(String(200), nullable=False)
    rate_limit_rps: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_by: Mapped[str] = mapped_column(String(100), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # low, normal or critical (migration 0017); NULL, as on keys made before it, is normal
    priority: Mapped[str | None] = mapped_column(String(16), nullable=True)


def _utc(moment: datetime | None) -> datetime | None:
    # SQLite keeps no time zone: what was written in UTC comes back naive.
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _record(row: ApiKeyRow) -> KeyRecord:
    created = _utc(row.created_at)
    assert created is not None
    return KeyRecord(row.id, row.secret_hash, row.namespace, row.role, row.description,
                     row.rate_limit_rps, row.created_by, created, _utc(row.expires_at),
                     _utc(row.revoked_at),
                     priority_named(row.priority) if row.priority else Priority.NORMAL)


class KeyStore:
    """Synchronous repository (``security.keys.KeyRecords``); callers run it off the event loop."""

    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def add(self, record: KeyRecord) -> None:
        with self._sessions.begin() as session:
            session.add(ApiKeyRow(
                id=record.id, secret_hash=record.secret_hash, namespace=record.namespace,
                role=record.role, description=record.description,
                rate_limit_rps=record.rate_limit_rps, created_by=record.created_by,
                created_at=record.created_at, expires_at=record.expires_at,
                revoked_at=record.revoked_at, priority=record.priority.name.lower()))

    def all(self) -> list[KeyRecord]:
        with self._sessions() as session:
            return [_record(row) for row in session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.created_at))]

    def revoke(self, key_id: str, at: datetime) -> bool:
        """Marks the key revoked; False when there is no such key or it was revoked already."""
        with self._sessions.begin() as session:
            result = session.execute(update(ApiKeyRow)
                                     .where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None))
                                     .values(revoked_at=at))
            return bool(result.rowcount)  # type: ignore[attr-defined]
