"""Per-namespace secrets, encrypted at rest: each value sealed under a data key of its own,
wrapped by the master key. Values leave only through ``reveal``, for a replica's environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    DateTime,
    Engine,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    delete,
    select,
    update,
)
from sqlalchemy.orm import Mapped, mapped_column, sessionmaker

from stratus.errors import IntegrityError, NotFound
from stratus.security.crypto import WrappedKey, new_data_key, seal, unseal
from stratus.security.masterkey import Keyring, MasterKeyError
from stratus.security.rotation import Rewrapped
from stratus.store.tables import Base


class SecretRow(Base):
    __tablename__ = "secrets"
    __table_args__ = (UniqueConstraint("namespace", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    namespace: Mapped[str] = mapped_column(String(63), nullable=False)
    name: Mapped[str] = mapped_column(String(128), nullable=False)
    kid: Mapped[str] = mapped_column(String(16), nullable=False)  # the master key that wraps
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """What anyone may see of a secret: its name and when it was set. Never its value."""

    name: str
    created_at: datetime
    updated_at: datetime

    def view(self) -> dict[str, Any]:
        return {"name": self.name, "created_at": self.created_at.isoformat(),
                "updated_at": self.updated_at.isoformat()}


def _utc(moment: datetime) -> datetime:
    # SQLite keeps no time zone: what was written in UTC comes back naive.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _info(row: SecretRow) -> SecretInfo:
    return SecretInfo(row.name, _utc(row.created_at), _utc(row.updated_at))


def object_id(namespace: str, name: str) -> str:
    """What a secret's ciphertext and data key are bound to: moved to another name or
    namespace, they no longer decrypt."""
    return f"secret:{namespace}/{name}"


class SecretStore:
    """Synchronous repository; callers run it off the event loop."""

    def __init__(self, engine: Engine, keyring: Keyring) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self.keyring = keyring

    def put(self, namespace: str, name: str, value: str) -> tuple[SecretInfo, bool]:
        """Set a secret; returns it and whether it was created (rather than replaced)."""
        data_key = new_data_key()
        oid = object_id(namespace, name)
        ciphertext = seal(data_key, oid, value.encode())
        now = datetime.now(UTC)
        # Wrapping and writing under the keyring's lock: a rotation cannot pass this row by
        # while it is being written under the key it is retiring.
        with self.keyring.writing(), self._sessions.begin() as session:
            wrapped = self.keyring.wrap(data_key, oid)
            row = session.scalar(select(SecretRow).where(SecretRow.namespace == namespace,
                                                         SecretRow.name == name))
            created = row is None
            if row is None:
                row = SecretRow(namespace=namespace, name=name, created_at=now)
                session.add(row)
            row.kid, row.wrapped_key, row.ciphertext = wrapped.kid, wrapped.sealed, ciphertext
            row.updated_at = now
            session.flush()
            return _info(row), created

    def infos(self, namespace: str) -> list[SecretInfo]:
        with self._sessions() as session:
            rows = session.scalars(select(SecretRow).where(SecretRow.namespace == namespace)
                                   .order_by(SecretRow.name))
            return [_info(row) for row in rows]

    def delete(self, namespace: str, name: str) -> bool:
        with self._sessions.begin() as session:
            result = session.execute(delete(SecretRow).where(SecretRow.namespace == namespace,
                                                             SecretRow.name == name))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def missing(self, namespace: str, names: set[str]) -> list[str]:
        if not names:
            return []
        with self._sessions() as session:
            found = set(session.scalars(select(SecretRow.name).where(
                SecretRow.namespace == namespace, SecretRow.name.in_(names))))
        return sorted(names - found)

    def reveal(self, namespace: str, refs: Mapping[str, str]) -> dict[str, str]:
        """The values for a replica's environment: ``{ENV_NAME: secret name}`` in, ``{ENV_NAME:
        value}`` out. A missing secret is NotFound; a damaged one an IntegrityError."""
        with self._sessions() as session:
            rows = {row.name: row for row in session.scalars(select(SecretRow).where(
                SecretRow.namespace == namespace, SecretRow.name.in_(set(refs.values()))))}
        values = {}
        for env_name, name in refs.items():
            row = rows.get(name)
            if row is None:
                raise NotFound(f"secret {name!r} (for ${env_name}) is not set in namespace "
                               f"{namespace!r}; set it with `stratus secrets set {name}`")
            oid = object_id(namespace, name)
            try:
                data_key = self.keyring.unwrap(WrappedKey(row.kid, row.wrapped_key), oid)
                values[env_name] = unseal(data_key, oid, row.ciphertext).decode()
            except IntegrityError as exc:
                raise IntegrityError(f"secret {name!r} fails its integrity check "
                                     f"({exc.message}); set it again") from None
        return values

    # -- master key rotation ----------------------------------------------------------------
    def kids_in_use(self) -> set[str]:
        with self._sessions() as session:
            return set(session.scalars(select(SecretRow.kid).distinct()))

    def rewrap(self, keyring: Keyring) -> Rewrapped:
        """Re-wrap the data key of every secret that the primary master key does not wrap yet;
        values stay as they are."""
        result = Rewrapped()
        with self._sessions() as session:
            stale = session.execute(select(SecretRow.id, SecretRow.namespace, SecretRow.name)
                                    .where(SecretRow.kid != keyring.primary.kid)).all()
        for row_id, namespace, name in stale:
            oid = object_id(namespace, name)
            with keyring.writing(), self._sessions.begin() as session:
                row = session.get(SecretRow, row_id)
                if row is None or row.kid == keyring.primary.kid:
                    continue  # deleted or set again meanwhile
                try:
                    data_key = keyring.unwrap(WrappedKey(row.kid, row.wrapped_key), oid)
                except (IntegrityError, MasterKeyError) as exc:
                    result.unreadable.append(f"secret {namespace}/{name}: {exc.message}")
                    continue
                wrapped = keyring.wrap(data_key, oid)
                session.execute(update(SecretRow).where(SecretRow.id == row_id)
                                .values(kid=wrapped.kid, wrapped_key=wrapped.sealed))
            result.rewrapped += 1
        return result
