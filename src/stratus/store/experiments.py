"""The experiments' table: definitions, conversion counts, and request statistics saved as JSON
so that a restart loses none of them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from stratus.errors import Conflict
from stratus.store.tables import ExperimentRow


@dataclass(frozen=True)
class ExperimentRecord:
    namespace: str
    name: str
    deployment: str
    variants: tuple[tuple[str, int], ...]  # (variant, revision), in the order they were given
    control: str
    alpha: float
    traffic: dict[str, int] | None
    sticky: dict[str, str] | None
    created_at: datetime
    conversions: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)


def _named(namespace: str, name: str) -> ColumnElement[bool]:
    return (ExperimentRow.namespace == namespace) & (ExperimentRow.name == name)


def _record(row: ExperimentRow) -> ExperimentRecord:
    return ExperimentRecord(
        namespace=row.namespace, name=row.name, deployment=row.deployment,
        variants=tuple((str(name), int(revision)) for name, revision in row.variants),
        control=row.control, alpha=row.alpha, traffic=row.traffic, sticky=row.sticky,
        # SQLite keeps no time zone: what was written in UTC comes back naive.
        created_at=row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC),
        conversions=dict(row.conversions), stats=dict(row.stats),
    )


class ExperimentStore:
    """Synchronous repository; callers run it off the event loop."""

    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def create(self, record: ExperimentRecord) -> None:
        row = ExperimentRow(
            namespace=record.namespace, name=record.name, deployment=record.deployment,
            variants=[list(pair) for pair in record.variants], control=record.control,
            alpha=record.alpha, traffic=record.traffic, sticky=record.sticky,
            conversions=record.conversions, stats=record.stats, created_at=record.created_at,
        )
        try:
            with self._sessions.begin() as session:
                session.add(row)
        except IntegrityError:
            raise Conflict(f"experiment {record.name!r} already exists") from None

    def list_all(self) -> list[ExperimentRecord]:
        with self._sessions() as session:
            query = select(ExperimentRow).order_by(ExperimentRow.namespace, ExperimentRow.name)
            return [_record(row) for row in session.scalars(query)]

    def delete(self, namespace: str, name: str) -> None:
        with self._sessions.begin() as session:
            session.execute(delete(ExperimentRow).where(_named(namespace, name)))

    def save_conversions(self, namespace: str, name: str, conversions: dict[str, int]) -> None:
        with self._sessions.begin() as session:
            session.execute(update(ExperimentRow).where(_named(namespace, name))
                            .values(conversions=conversions))

    def save_stats(self, snapshots: Iterable[tuple[str, str, dict[str, Any]]]) -> None:
        """``snapshots`` are (namespace, name, stats); one transaction for all of them."""
        with self._sessions.begin() as session:
            for namespace, name, stats in snapshots:
                session.execute(update(ExperimentRow).where(_named(namespace, name))
                                .values(stats=stats))
