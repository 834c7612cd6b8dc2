"""The audit table: appends of chained records, the chain's tail, queries by time, actor and
action, and an id-ordered scan for verification."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from stratus.security.audit import AuditEvent, AuditRecord
from stratus.security.audit_log import ChainConflict
from stratus.store.tables import AuditRow

SCAN_BATCH = 2000


def _record(row: AuditRow) -> AuditRecord:
    event = AuditEvent(at=row.at, namespace=row.namespace, actor=row.actor, action=row.action,
                       target=row.target, source=row.source, result=row.result,
                       status=row.status, request_id=row.request_id)
    return AuditRecord(row.id, event, row.prev_hash, row.hash)


def _row(record: AuditRecord) -> dict[str, object]:
    event = record.event
    return {"id": record.id, "at": event.at, "namespace": event.namespace, "actor": event.actor,
            "action": event.action, "target": event.target, "source": event.source,
            "result": event.result, "status": event.status, "request_id": event.request_id,
            "prev_hash": record.prev_hash, "hash": record.hash}


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Which records to list; ``None`` leaves a criterion open. ``action`` matches the action
    itself or any below it: ``deployments`` matches ``deployments.traffic.put``."""

    namespace: str | None = None
    since: float | None = None
    until: float | None = None
    actor: str | None = None
    action: str | None = None
    limit: int = 100


class AuditStore:
    """Synchronous repository (``security.audit_log.AuditRecords``); callers run it off the event
    loop."""

    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def tail(self) -> AuditRecord | None:
        """The newest record: the next one chains onto it."""
        with self._sessions() as session:
            row = session.scalars(select(AuditRow).order_by(AuditRow.id.desc()).limit(1)).first()
            return _record(row) if row is not None else None

    def append(self, records: Sequence[AuditRecord]) -> None:
        """One transaction. An id already taken (another server on the same database wrote
        first) raises ``ChainConflict`` and writes nothing; re-chain onto the new tail."""
        if not records:
            return
        try:
            with self._sessions.begin() as session:
                session.execute(insert(AuditRow), [_row(record) for record in records])
        except IntegrityError:
            raise ChainConflict(f"record id {records[0].id} is taken") from None

    def query(self, query: AuditQuery) -> list[AuditRecord]:
        """The newest ``limit`` records that match, newest first."""
        statement = select(AuditRow).order_by(AuditRow.id.desc()).limit(query.limit)
        if query.namespace is not None:
            statement = statement.where(AuditRow.namespace == query.namespace)
        if query.since is not None:
            statement = statement.where(AuditRow.at >= query.since)
        if query.until is not None:
            statement = statement.where(AuditRow.at < query.until)
        if query.actor is not None:
            statement = statement.where(AuditRow.actor == query.actor)
        if query.action is not None:
            statement = statement.where(or_(
                AuditRow.action == query.action,
                AuditRow.action.startswith(query.action + ".", autoescape=True)))
        with self._sessions() as session:
            return [_record(row) for row in session.scalars(statement)]

    def get(self, record_id: int) -> AuditRecord | None:
        with self._sessions() as session:
            row = session.get(AuditRow, record_id)
            return _record(row) if row is not None else None

    def scan(self, batch: int = SCAN_BATCH) -> Iterator[AuditRecord]:
        """Every record in id order, read ``batch`` at a time in short transactions, so a long
        verification holds no lock while the writer appends."""
        after = 0
        while True:
            with self._sessions() as session:
                rows = list(session.scalars(select(AuditRow).where(AuditRow.id > after)
                                            .order_by(AuditRow.id).limit(batch)))
            yield from (_record(row) for row in rows)
            if len(rows) < batch:
                return
            after = rows[-1].id
