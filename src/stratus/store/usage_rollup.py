"""Per-minute rollups of usage records: the pruner's step (one bounded batch of old records
deleted and added to their minutes' sums, in one transaction) and the table it keeps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    Float,
    Integer,
    Select,
    String,
    Table,
    UniqueConstraint,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Mapped, mapped_column

from stratus.store.retention import MinuteKey, MinuteSums, roll_up
from stratus.store.tables import Base, UsageRow

ROLLED_COLUMNS = (UsageRow.namespace, UsageRow.deployment, UsageRow.revision, UsageRow.started_at,
                  UsageRow.duration_s, UsageRow.gb_seconds, UsageRow.prompt_tokens,
                  UsageRow.completion_tokens, UsageRow.cold_start, UsageRow.status,
                  UsageRow.shadow)  # retention.RolledRecord's order


class UsageMinuteRow(Base):
    """The records of one revision that started in one minute, summed, once they are older
    than the retention. The key leads with namespace and minute: what reports filter on."""

    __tablename__ = "usage_minutes"
    __table_args__ = (UniqueConstraint("namespace", "minute", "deployment", "revision"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    namespace: Mapped[str] = mapped_column(String(63), nullable=False)
    deployment: Mapped[str] = mapped_column(String(63), nullable=False)
    revision: Mapped[int] = mapped_column(Integer, nullable=False)
    minute: Mapped[int] = mapped_column(BigInteger, nullable=False)  # Unix seconds, a multiple of 60
    requests: Mapped[int] = mapped_column(BigInteger, nullable=False)
    duration_s: Mapped[float] = mapped_column(Float, nullable=False)
    gb_seconds: Mapped[float] = mapped_column(Float, nullable=False)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, nullable=False)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, nullable=False)
    cold_starts: Mapped[int] = mapped_column(BigInteger, nullable=False)
    errors: Mapped[int] = mapped_column(BigInteger, nullable=False)
    shadow_requests: Mapped[int] = mapped_column(BigInteger, nullable=False)


SUMMED = ("requests", "duration_s", "gb_seconds", "prompt_tokens", "completion_tokens",
          "cold_starts", "errors", "shadow_requests")  # MinuteSums' fields, the columns added


def minutes_query(namespace: str, since: float, until: float,
                  width: int) -> Select[*tuple[Any, ...]]:
    """The rollups' sums per group of the first ``width`` of namespace, deployment, revision,
    in ``SUMMED`` order. A minute counts whole when it starts in [since, until): over periods
    whose ends fall on minutes, the same as the records it sums."""
    columns = [UsageMinuteRow.namespace, UsageMinuteRow.deployment, UsageMinuteRow.revision][:width]
    return (select(*columns, *(func.sum(getattr(UsageMinuteRow, name)) for name in SUMMED))
            .where(UsageMinuteRow.namespace == namespace, UsageMinuteRow.minute >= since,
                   UsageMinuteRow.minute < until)
            .group_by(*columns))


@dataclass(frozen=True)
class PruneStep:
    """What one step did: ``rolled`` records rolled up and deleted; ``next`` is the namespace
    the next step starts from, None when no namespace is left to look at."""

    rolled: int
    next: str | None


def prune_step(engine: Engine, cursor: str, cutoff: float, limit: int) -> PruneStep:
    """Roll up and delete at most ``limit`` records that started before ``cutoff``, of the
    first namespace at or after ``cursor``. Namespaces are walked one index seek at a time
    (the usage table's index leads with the namespace), never by scanning the table."""
    namespace_column = UsageRow.namespace
    with engine.begin() as connection:
        namespace = connection.execute(
            select(func.min(namespace_column)).where(namespace_column >= cursor)).scalar()
        if namespace is None:
            return PruneStep(0, None)
        batch = (select(UsageRow.id)
                 .where(namespace_column == namespace, UsageRow.started_at < cutoff)
                 .limit(limit))
        # The rows summed are the rows this statement deleted, so a record is in the sums
        # exactly once even with two pruners at work, or a late record inserted meanwhile.
        deleted = connection.execute(
            delete(UsageRow).where(UsageRow.id.in_(batch)).returning(*ROLLED_COLUMNS)).all()
        if deleted:
            _add(connection, namespace, roll_up(tuple(row) for row in deleted))
        if len(deleted) == limit:
            return PruneStep(limit, namespace)  # there may be more of it
        following = connection.execute(
            select(func.min(namespace_column)).where(namespace_column > namespace)).scalar()
        return PruneStep(len(deleted), following)


def _add(connection: Connection, namespace: str, sums: dict[MinuteKey, MinuteSums]) -> None:
    """Add each minute's sums to its row, or make the row: a record that arrived late (the
    meter retries while the store is down) joins a minute rolled up before it. Two statements,
    each run for many rows: one built per minute cost milliseconds of the writer's time each."""
    minutes = [key[3] for key in sums]
    table = MINUTES_TABLE.c
    existing = {tuple(row) for row in connection.execute(
        select(table.deployment, table.revision, table.minute)
        .where(table.namespace == namespace, table.minute >= min(minutes),
               table.minute <= max(minutes)))}
    adds: list[dict[str, Any]] = []
    news: list[dict[str, Any]] = []
    for (_, deployment, revision, minute), cell in sums.items():
        values = {name: getattr(cell, name) for name in SUMMED}
        if (deployment, revision, minute) in existing:
            adds.append({"k_namespace": namespace, "k_deployment": deployment,
                         "k_revision": revision, "k_minute": minute,
                         **{f"d_{name}": value for name, value in values.items()}})
        else:
            news.append({"namespace": namespace, "deployment": deployment, "revision": revision,
                         "minute": minute, **values})
    if adds:
        connection.execute(_ADD, adds)
    if news:
        connection.execute(insert(MINUTES_TABLE), news)


MINUTES_TABLE: Table = UsageMinuteRow.__table__  # type: ignore[assignment]
_ADD = (update(MINUTES_TABLE)
        .where(MINUTES_TABLE.c.namespace == bindparam("k_namespace"),
               MINUTES_TABLE.c.minute == bindparam("k_minute"),
               MINUTES_TABLE.c.deployment == bindparam("k_deployment"),
               MINUTES_TABLE.c.revision == bindparam("k_revision"))
        .values({name: MINUTES_TABLE.c[name] + bindparam(f"d_{name}") for name in SUMMED}))
