"""Usage records and per-minute replica capacity: written in batches, summed per group for
cost reports."""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import chain
from typing import Any, NamedTuple

from sqlalchemy import (
    Connection,
    Dialect,
    Engine,
    Table,
    case,
    func,
    insert,
    select,
    union_all,
    update,
)
from sqlalchemy.orm import InstrumentedAttribute, sessionmaker

from stratus.cost import Capacity, Metered
from stratus.store.retention import ERROR_STATUS
from stratus.store.tables import CapacityRow, UsageRow
from stratus.store.usage_rollup import SUMMED, PruneStep, minutes_query, prune_step

GROUPINGS = ("namespace", "deployment", "revision")
WHOLE_DEPLOYMENT = 0  # the capacity rows of a deployment as a whole, not of one revision


USAGE_TABLE: Table = UsageRow.__table__  # type: ignore[assignment]


class UsageRecord(NamedTuple):
    """One invocation. ``started_at`` is its arrival; ``queue_wait_s`` passed before a replica
    took it and ``duration_s`` (the billed time) after. A tuple in the table's column order, so
    the driver takes it as it is: a record object per invocation, then a row built from it,
    cost more than the INSERT itself at thousands of invocations a second."""

    namespace: str
    deployment: str
    revision: int
    request_id: str
    replica_id: str
    protocol: str
    status: int
    shadow: bool
    cold_start: bool
    started_at: float
    duration_s: float
    queue_wait_s: float
    memory_limit_mb: int | None
    peak_rss_bytes: int
    billed_memory_mb: int
    gb_seconds: float
    prompt_tokens: int = 0
    completion_tokens: int = 0


USAGE_FIELDS = UsageRecord._fields


@functools.cache
def _insert_statement(dialect: Dialect) -> tuple[str, tuple[str, ...], bool]:
    """The driver-level INSERT of a usage record, its parameters' order, and whether they are
    positional (SQLite's ``?``) or named (psycopg's ``%(name)s``)."""
    compiled = insert(USAGE_TABLE).compile(dialect=dialect, column_keys=list(USAGE_FIELDS))
    order = tuple(compiled.positiontup or ()) if compiled.positional else USAGE_FIELDS
    return compiled.string, order, bool(compiled.positional)


ROWS_PER_STATEMENT = 200  # 18 columns: 3,600 parameters, well under SQLite's 32,766


@functools.cache
def _multirow(sql: str, rows: int) -> str:
    """``INSERT ... VALUES (?, ...)`` made to insert ``rows`` rows at once."""
    head, _, group = sql.partition(" VALUES ")
    return f"{head} VALUES {', '.join([group] * rows)}"


def _insert_many_rows(connection: Connection, sql: str, records: Sequence[UsageRecord]) -> None:
    """SQLite's ``executemany`` releases and retakes the GIL around every row; with the event
    loop busy on another thread, each row then waits for the loop to let go, and the loop is
    made to let go thousands of times a second. One statement per few hundred rows does the
    same inserts with one hand-over each."""
    for start in range(0, len(records), ROWS_PER_STATEMENT):
        chunk = records[start:start + ROWS_PER_STATEMENT]
        connection.exec_driver_sql(_multirow(sql, len(chunk)), tuple(chain.from_iterable(chunk)))


def _row(record: UsageRecord) -> dict[str, Any]:
    """A record as named insert parameters (psycopg's ``%(name)s``)."""
    return record._asdict()


@dataclass(frozen=True, slots=True)
class CapacityMinute:
    """What the sampler saw of one revision (or, at revision 0, one deployment) in one minute."""

    namespace: str
    deployment: str
    revision: int
    minute: int
    observed_s: float
    peak_replicas: int
    replica_seconds: float
    busy_replica_seconds: float


@dataclass(frozen=True)
class GroupUsage:
    """One group of a report: the invocations' sums and the capacity of each deployment in it
    (a namespace's always-on fleet provisions each deployment at its own peak)."""

    key: tuple[Any, ...]
    metered: Metered
    cold_starts: int = 0
    errors: int = 0
    shadow_requests: int = 0
    capacities: tuple[Capacity, ...] = ()


def _columns(by: str) -> list[InstrumentedAttribute[Any]]:
    if by not in GROUPINGS:
        raise ValueError(f"cannot group by {by!r}")
    return [UsageRow.namespace, UsageRow.deployment, UsageRow.revision][:GROUPINGS.index(by) + 1]


def _capacity_columns(by: str) -> list[InstrumentedAttribute[Any]]:
    # Always per deployment at least: a namespace sums its deployments' always-on costs.
    if by == "revision":
        return [CapacityRow.namespace, CapacityRow.deployment, CapacityRow.revision]
    return [CapacityRow.namespace, CapacityRow.deployment]


class UsageStore:
    """Synchronous repository; callers run it off the event loop."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def write(self, records: Sequence[UsageRecord], minutes: Sequence[CapacityMinute]) -> None:
        """Append ``records`` and set ``minutes`` (each replaces what was saved of that minute,
        since the sampler keeps a minute's running totals), in one transaction."""
        with self._sessions.begin() as session:
            if records:
                # Straight to the driver's executemany: SQLAlchemy's per-row parameter
                # processing, at thousands of records a second, held the GIL for a quarter
                # of a busy gateway's time. The values are plain numbers, strings and bools.
                connection = session.connection()
                sql, order, positional = _insert_statement(connection.dialect)
                if connection.dialect.name == "sqlite" and order == USAGE_FIELDS:
                    _insert_many_rows(connection, sql, records)
                else:
                    rows: Sequence[Any] = [_row(r) for r in records] if not positional \
                        else [tuple(getattr(r, k) for k in order) for r in records]
                    connection.exec_driver_sql(sql, rows)
            for minute in minutes:
                key = ((CapacityRow.namespace == minute.namespace)
                       & (CapacityRow.deployment == minute.deployment)
                       & (CapacityRow.revision == minute.revision)
                       & (CapacityRow.minute == minute.minute))
                values = {"observed_s": minute.observed_s, "peak_replicas": minute.peak_replicas,
                          "replica_seconds": minute.replica_seconds,
                          "busy_replica_seconds": minute.busy_replica_seconds}
                changed = session.execute(update(CapacityRow).where(key).values(**values))
                if getattr(changed, "rowcount", 0) == 0:
                    session.execute(insert(CapacityRow), [asdict(minute)])

    def records(self, namespace: str, since: float, until: float, deployment: str | None = None,
                limit: int = 100) -> list[UsageRecord]:
        """The newest ``limit`` records that started in [since, until), newest first."""
        query = (select(UsageRow).where(UsageRow.namespace == namespace,
                                        UsageRow.started_at >= since, UsageRow.started_at < until)
                 .order_by(UsageRow.started_at.desc()).limit(limit))
        if deployment is not None:
            query = query.where(UsageRow.deployment == deployment)
        with self._sessions() as session:
            return [UsageRecord(*(getattr(row, name) for name in USAGE_FIELDS))
                    for row in session.scalars(query)]

    def report(self, namespace: str, since: float, until: float, by: str) -> list[GroupUsage]:
        """Per group (``by`` namespace, deployment or revision): records started in
        [since, until), those rolled up (``usage_minutes``) as if each started at its minute's
        start, and the replica capacity of the same period."""
        columns = _columns(by)
        width = len(columns)
        kept = (select(*columns, func.count(), func.sum(UsageRow.duration_s),
                       func.sum(UsageRow.gb_seconds), func.sum(UsageRow.prompt_tokens),
                       func.sum(UsageRow.completion_tokens),
                       func.sum(case((UsageRow.cold_start, 1), else_=0)),
                       func.sum(case((UsageRow.status >= ERROR_STATUS, 1), else_=0)),
                       func.sum(case((UsageRow.shadow, 1), else_=0)))
                .where(UsageRow.namespace == namespace, UsageRow.started_at >= since,
                       UsageRow.started_at < until)
                .group_by(*columns))
        # One statement, so one snapshot: a prune committed between two reads would count
        # its records twice (kept, then rolled up) or not at all.
        query = union_all(kept, minutes_query(namespace, since, until, width))
        sums: dict[tuple[Any, ...], list[Any]] = {}
        with self._sessions() as session:
            for row in session.execute(query):
                key = tuple(row[:width])
                found = sums.setdefault(key, [0] * len(SUMMED))
                for index, value in enumerate(row[width:]):
                    found[index] += value or 0
            capacity = self._capacity(session, namespace, since, until, by)
        groups: dict[tuple[Any, ...], GroupUsage] = {}
        for key, (n, seconds, gbs, prompt, completion, cold, errors, shadow) in sums.items():
            groups[key] = GroupUsage(
                key, Metered(int(n), float(seconds), float(gbs), int(prompt), int(completion)),
                int(cold), int(errors), int(shadow))
        for key, capacities in capacity.items():
            group = groups.get(key) or GroupUsage(key, Metered())
            groups[key] = GroupUsage(group.key, group.metered, group.cold_starts, group.errors,
                                     group.shadow_requests, tuple(capacities))
        return [groups[key] for key in sorted(groups)]

    def prune(self, cursor: str, cutoff: float, limit: int) -> PruneStep:
        """One step of the retention: see ``usage_rollup.prune_step``."""
        return prune_step(self.engine, cursor, cutoff, limit)

    def _capacity(self, session: Any, namespace: str, since: float, until: float,
                  by: str) -> dict[tuple[Any, ...], list[Capacity]]:
        """Capacity per group. Whole minutes inside the period are summed by the database; the
        minute that straddles ``since`` counts for the part of it inside, as if spread evenly."""
        first_whole = math.ceil(since / 60) * 60
        columns = _capacity_columns(by)
        revisions = (CapacityRow.revision != WHOLE_DEPLOYMENT if by == "revision"
                     else CapacityRow.revision == WHOLE_DEPLOYMENT)
        where = (CapacityRow.namespace == namespace, revisions, CapacityRow.minute < until)
        whole = (select(*columns, func.sum(CapacityRow.observed_s), func.max(CapacityRow.peak_replicas),
                        func.sum(CapacityRow.replica_seconds),
                        func.sum(CapacityRow.busy_replica_seconds))
                 .where(*where, CapacityRow.minute >= first_whole).group_by(*columns))
        found: dict[tuple[Any, ...], Capacity] = {}
        for row in session.execute(whole):
            key = tuple(row[:len(columns)])
            found[key] = Capacity(float(row[-4]), int(row[-3]), float(row[-2]), float(row[-1]))
        if first_whole > since:
            partial = select(CapacityRow).where(*where, CapacityRow.minute == first_whole - 60)
            share = (first_whole - since) / 60
            for cell in session.scalars(partial):
                key = tuple(getattr(cell, column.key) for column in columns)
                found[key] = _plus(found.get(key, Capacity()), cell, share)
        # Deployments (or revisions) go into the report's groups, whose key may be shorter.
        width = len(_columns(by))
        grouped: dict[tuple[Any, ...], list[Capacity]] = defaultdict(list)
        for key, capacity in found.items():
            grouped[key[:width]].append(capacity)
        return grouped


def _plus(capacity: Capacity, cell: CapacityRow, share: float) -> Capacity:
    return Capacity(capacity.observed_s + cell.observed_s * share,
                    max(capacity.peak_replicas, cell.peak_replicas),
                    capacity.replica_seconds + cell.replica_seconds * share,
                    capacity.busy_replica_seconds + cell.busy_replica_seconds * share)

