"""The jobs' event log in the metadata store (SQLAlchemy Core, SQLite or PostgreSQL): appends
each event and, in the same transaction, folds it into the projections the queries read."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, delete, func, insert, select, update

from stratus.jobs.events import JobEvent, check_event
from stratus.jobs.fold import TERMINAL, JobState, apply, fold, points
from stratus.jobs.fold import curves as fold_curves
from stratus.store.job_tables import JobEventRow, JobMetricRow, JobProjectionRow

EVENTS: Table = cast(Table, JobEventRow.__table__)
STATES: Table = cast(Table, JobProjectionRow.__table__)
METRICS: Table = cast(Table, JobMetricRow.__table__)
_REBUILD_BATCH = 5_000


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _state(text: str) -> JobState:
    return JobState(**json.loads(text))


def _event(row: Any) -> JobEvent:
    return JobEvent(job_id=row.job_id, seq=row.seq, type=row.type, at=row.at,
                    data=json.loads(row.data))


def _state_row(state: JobState) -> dict[str, Any]:
    return {"id": state.id, "namespace": state.namespace, "experiment": state.experiment,
            "status": state.status, "submitted_at": state.submitted_at or 0.0,
            "last_seq": state.last_seq, "state": _dumps(dataclasses.asdict(state))}


class JobLog:
    """Synchronous; callers on an event loop run it in a thread. Appends of one server are
    serialised by a lock; the unique (job, seq) keeps two servers from interleaving a job."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()

    # -- commands ---------------------------------------------------------------------------

    def append(self, namespace: str, job_id: str, type_: str, data: dict[str, Any],
               at: float | None = None) -> JobEvent:
        """Store one event and fold it into the projections. The first event of a job must be
        ``JobSubmitted``; an unknown job otherwise raises ``LookupError``."""
        check_event(type_, data)
        with self._lock, self.engine.begin() as conn:
            current = conn.execute(select(STATES.c.state).where(
                STATES.c.id == job_id, STATES.c.namespace == namespace)).scalar_one_or_none()
            if current is None and type_ != "JobSubmitted":
                raise LookupError(f"job {job_id!r} has no JobSubmitted event")
            if current is not None and type_ == "JobSubmitted":
                raise ValueError(f"job {job_id!r} was already submitted")
            state = _state(current) if current is not None else JobState(id=job_id,
                                                                          namespace=namespace)
            event = JobEvent(job_id=job_id, seq=state.last_seq + 1, type=type_,
                             at=time.time() if at is None else at, data=data)
            conn.execute(insert(EVENTS), {"namespace": namespace, "job_id": job_id,
                                          "seq": event.seq, "type": type_, "at": event.at,
                                          "data": _dumps(data)})
            folded = apply(state, event)
            if current is None:
                conn.execute(insert(STATES), _state_row(folded))
            else:
                conn.execute(update(STATES).where(STATES.c.id == job_id).values(
                    **_state_row(folded)))
            self._write_points(conn, job_id, points(event))
        return event

    @staticmethod
    def _write_points(conn: Connection, job_id: str, found: list[tuple[str, int, float]]) -> None:
        for name, step, value in found:
            # A step logged again keeps its last value: delete, then insert (portable upsert).
            conn.execute(delete(METRICS).where(METRICS.c.job_id == job_id, METRICS.c.name == name,
                                               METRICS.c.step == step))
            conn.execute(insert(METRICS), {"job_id": job_id, "name": name, "step": step,
                                           "value": value})

    def rebuild(self) -> int:
        """Drop the projections and fold them again from the whole log; returns the number of
        events read. The same ``apply`` and ``points`` as the live appends."""
        with self._lock, self.engine.begin() as conn:
            states: dict[str, JobState] = {}
            curve_points: dict[tuple[str, str, int], float] = {}
            count = 0
            # Streamed (a server-side cursor on PostgreSQL): the log may not fit in memory.
            result = conn.execute(
                select(EVENTS.c.namespace, EVENTS.c.job_id, EVENTS.c.seq, EVENTS.c.type,
                       EVENTS.c.at, EVENTS.c.data).order_by(EVENTS.c.job_id, EVENTS.c.seq)
                .execution_options(yield_per=_REBUILD_BATCH))
            for row in result:
                event = _event(row)
                state = states.get(row.job_id) or JobState(id=row.job_id, namespace=row.namespace)
                states[row.job_id] = apply(state, event)
                for name, step, value in points(event):
                    curve_points[(row.job_id, name, step)] = value
                count += 1
            conn.execute(delete(METRICS))
            conn.execute(delete(STATES))
            rows = [_state_row(state) for state in states.values()]
            for start in range(0, len(rows), _REBUILD_BATCH):
                conn.execute(insert(STATES), rows[start:start + _REBUILD_BATCH])
            metric_rows = [{"job_id": job, "name": name, "step": step, "value": value}
                           for (job, name, step), value in curve_points.items()]
            for start in range(0, len(metric_rows), _REBUILD_BATCH):
                conn.execute(insert(METRICS), metric_rows[start:start + _REBUILD_BATCH])
        return count

    # -- queries ----------------------------------------------------------------------------

    def events(self, namespace: str, job_id: str, until: float | None = None,
               after_seq: int = 0) -> list[JobEvent]:
        query = select(EVENTS).where(EVENTS.c.job_id == job_id, EVENTS.c.namespace == namespace,
                                     EVENTS.c.seq > after_seq).order_by(EVENTS.c.seq)
        if until is not None:
            query = query.where(EVENTS.c.at <= until)
        with self.engine.connect() as conn:
            return [_event(row) for row in conn.execute(query)]

    def job(self, namespace: str, job_id: str) -> JobState | None:
        with self.engine.connect() as conn:
            text = conn.execute(select(STATES.c.state).where(
                STATES.c.id == job_id, STATES.c.namespace == namespace)).scalar_one_or_none()
        return None if text is None else _state(text)

    def state_at(self, namespace: str, job_id: str, at: float) -> JobState | None:
        """Replay: the job as it was at ``at``, folded from the log (None: not yet submitted)."""
        return fold(namespace, job_id, self.events(namespace, job_id, until=at))

    def jobs(self, namespace: str, *, experiment: str | None = None, status: str | None = None,
             limit: int = 100) -> list[JobState]:
        query = select(STATES.c.state).where(STATES.c.namespace == namespace)
        if experiment is not None:
            query = query.where(STATES.c.experiment == experiment)
        if status is not None:
            query = query.where(STATES.c.status == status)
        query = query.order_by(STATES.c.submitted_at.desc(), STATES.c.id).limit(limit)
        with self.engine.connect() as conn:
            return [_state(text) for text in conn.execute(query).scalars()]

    def submitted_since(self, namespace: str, since: float) -> list[JobState]:
        """A namespace's jobs submitted at or after ``since``, oldest first: few, read through
        the (namespace, submitted_at) index whatever the size of the log."""
        query = (select(STATES.c.state)
                 .where(STATES.c.namespace == namespace, STATES.c.submitted_at >= since)
                 .order_by(STATES.c.submitted_at, STATES.c.id))
        with self.engine.connect() as conn:
            return [_state(text) for text in conn.execute(query).scalars()]

    def curves(self, namespace: str, job_id: str) -> dict[str, list[tuple[int, float]]]:
        query = (select(METRICS.c.name, METRICS.c.step, METRICS.c.value)
                 .join(STATES, STATES.c.id == METRICS.c.job_id)
                 .where(METRICS.c.job_id == job_id, STATES.c.namespace == namespace)
                 .order_by(METRICS.c.name, METRICS.c.step))
        result: dict[str, list[tuple[int, float]]] = {}
        with self.engine.connect() as conn:
            for name, step, value in conn.execute(query):
                result.setdefault(name, []).append((step, value))
        return result

    def curves_from_log(self, namespace: str, job_id: str) -> dict[str, list[tuple[int, float]]]:
        """The curves folded from the log itself, without the projection."""
        return fold_curves(self.events(namespace, job_id))

    def unfinished(self) -> list[JobState]:
        """Every job, in any namespace, that is queued or running: what a starting server must
        settle (a job cannot outlive the server that ran it)."""
        query = select(STATES.c.state).where(STATES.c.status.not_in(sorted(TERMINAL))).order_by(
            STATES.c.submitted_at)
        with self.engine.connect() as conn:
            return [_state(text) for text in conn.execute(query).scalars()]

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(EVENTS)).scalar_one())
