"""The triggers' repository: schedules, topics with their subscriptions, and external queue
sources, each per namespace. Synchronous; callers run it off the event loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import Engine, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from stratus.errors import Conflict, NotFound
from stratus.store.tables import ScheduleRow, SourceRow, SubscriptionRow, TopicRow

INVOCATION = "invocation"  # a schedule's target: an async invocation of a deployment
JOB = "job"  # ... or a training job


@dataclass(frozen=True, slots=True)
class Schedule:
    id: int
    namespace: str
    name: str
    cron: str
    timezone: str
    deployment: str | None  # an invocation's
    payload: str | None  # JSON text; an invocation's
    catch_up: str
    created_at: float
    last_fired: float | None
    target: str = INVOCATION
    job: str | None = None  # JSON text of a job's body (``POST /api/jobs``)

    def view(self) -> dict[str, Any]:
        return {"name": self.name, "cron": self.cron, "timezone": self.timezone,
                "target": self.target, "deployment": self.deployment, "payload": self.payload,
                "job": self.job, "catch_up": self.catch_up, "created_at": self.created_at,
                "last_fired": self.last_fired}


@dataclass(frozen=True, slots=True)
class Subscription:
    topic: str
    name: str
    deployment: str
    filter: dict[str, str]
    created_at: float

    def view(self) -> dict[str, Any]:
        return {"topic": self.topic, "name": self.name, "deployment": self.deployment,
                "filter": self.filter, "created_at": self.created_at}


@dataclass(frozen=True, slots=True)
class Topic:
    name: str
    created_at: float
    subscriptions: int

    def view(self) -> dict[str, Any]:
        return {"name": self.name, "created_at": self.created_at,
                "subscriptions": self.subscriptions}


@dataclass(frozen=True, slots=True)
class Source:
    namespace: str
    name: str
    kind: str
    config: dict[str, Any]
    deployment: str
    created_at: float

    def view(self) -> dict[str, Any]:
        shown = dict(self.config)
        if "url" in shown:
            shown["url"] = redacted(str(shown["url"]))
        return {"name": self.name, "kind": self.kind, "deployment": self.deployment,
                "created_at": self.created_at, **shown}


def redacted(url: str) -> str:
    """The URL without its password: a source's view never shows it."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _schedule(row: ScheduleRow) -> Schedule:
    return Schedule(row.id, row.namespace, row.name, row.cron, row.timezone, row.deployment,
                    row.payload, row.catch_up, row.created_at, row.last_fired, row.target,
                    row.job)


def _source(row: SourceRow) -> Source:
    return Source(row.namespace, row.name, row.kind, dict(row.config), row.deployment,
                  row.created_at)


class TriggerStore:
    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def _insert(self, row: Any, what: str) -> None:
        try:
            with self._sessions.begin() as session:
                session.add(row)
        except IntegrityError:
            raise Conflict(f"{what} already exists") from None

    # -- schedules ------------------------------------------------------------------
    def add_schedule(self, namespace: str, name: str, cron: str, timezone: str,
                     deployment: str | None, payload: str | None, catch_up: str, now: float,
                     *, job: str | None = None) -> Schedule:
        """An invocation's schedule (``deployment`` and ``payload``) or, with ``job``, a job's."""
        row = ScheduleRow(namespace=namespace, name=name, cron=cron, timezone=timezone,
                          target=INVOCATION if job is None else JOB, deployment=deployment,
                          payload=payload, job=job, catch_up=catch_up, created_at=now,
                          last_fired=None)
        self._insert(row, f"schedule {name!r}")
        return _schedule(row)

    def schedules(self, namespace: str | None = None) -> list[Schedule]:
        """A namespace's schedules, or every namespace's (for the runner)."""
        query = select(ScheduleRow).order_by(ScheduleRow.name)
        if namespace is not None:
            query = query.where(ScheduleRow.namespace == namespace)
        with self._sessions() as session:
            return [_schedule(row) for row in session.scalars(query)]

    def schedule(self, namespace: str, name: str) -> Schedule:
        with self._sessions() as session:
            row = session.scalars(select(ScheduleRow).where(
                ScheduleRow.namespace == namespace, ScheduleRow.name == name)).first()
            if row is None:
                raise NotFound(f"schedule {name!r} not found")
            return _schedule(row)

    def delete_schedule(self, namespace: str, name: str) -> None:
        with self._sessions.begin() as session:
            gone = session.execute(delete(ScheduleRow).where(
                ScheduleRow.namespace == namespace, ScheduleRow.name == name))
            if not getattr(gone, "rowcount", 0):
                raise NotFound(f"schedule {name!r} not found")

    def job_bodies(self) -> list[str]:
        """The job bodies (JSON text) of every namespace's job schedules: their code bundles
        are kept by ``/api/gc``."""
        with self._sessions() as session:
            return [body for body in session.scalars(select(ScheduleRow.job).where(
                ScheduleRow.target == JOB)) if body is not None]

    def fired(self, schedule_id: int, through: float) -> None:
        """Record the latest tick done; never moves backwards."""
        with self._sessions.begin() as session:
            session.execute(update(ScheduleRow).where(
                ScheduleRow.id == schedule_id,
                (ScheduleRow.last_fired.is_(None)) | (ScheduleRow.last_fired < through),
            ).values(last_fired=through))

    # -- topics ---------------------------------------------------------------------
    def add_topic(self, namespace: str, name: str, now: float) -> Topic:
        self._insert(TopicRow(namespace=namespace, name=name, created_at=now), f"topic {name!r}")
        return Topic(name, now, 0)

    def _topic(self, session: Session, namespace: str, name: str) -> TopicRow:
        row = session.scalars(select(TopicRow).where(
            TopicRow.namespace == namespace, TopicRow.name == name)).first()
        if row is None:
            raise NotFound(f"topic {name!r} not found")
        return row

    def topics(self, namespace: str) -> list[Topic]:
        with self._sessions() as session:
            rows = session.scalars(select(TopicRow).where(TopicRow.namespace == namespace)
                                   .order_by(TopicRow.name))
            return [Topic(row.name, row.created_at, len(row.subscriptions)) for row in rows]

    def delete_topic(self, namespace: str, name: str) -> None:
        with self._sessions.begin() as session:
            session.delete(self._topic(session, namespace, name))

    def add_subscription(self, namespace: str, topic: str, name: str, deployment: str,
                         filter: dict[str, str], now: float) -> Subscription:
        with self._sessions() as session:
            topic_id = self._topic(session, namespace, topic).id
        row = SubscriptionRow(topic_id=topic_id, name=name, deployment=deployment,
                              filter=filter, created_at=now)
        self._insert(row, f"subscription {name!r} of topic {topic!r}")
        return Subscription(topic, name, deployment, filter, now)

    def subscriptions(self, namespace: str, topic: str) -> list[Subscription]:
        """NotFound for an unknown topic."""
        with self._sessions() as session:
            found = self._topic(session, namespace, topic)
            return [Subscription(topic, row.name, row.deployment, dict(row.filter),
                                 row.created_at)
                    for row in sorted(found.subscriptions, key=lambda row: row.name)]

    def delete_subscription(self, namespace: str, topic: str, name: str) -> None:
        with self._sessions.begin() as session:
            topic_id = self._topic(session, namespace, topic).id
            gone = session.execute(delete(SubscriptionRow).where(
                SubscriptionRow.topic_id == topic_id, SubscriptionRow.name == name))
            if not getattr(gone, "rowcount", 0):
                raise NotFound(f"subscription {name!r} of topic {topic!r} not found")

    # -- sources --------------------------------------------------------------------
    def add_source(self, namespace: str, name: str, kind: str, config: dict[str, Any],
                   deployment: str, now: float) -> Source:
        row = SourceRow(namespace=namespace, name=name, kind=kind, config=config,
                        deployment=deployment, created_at=now)
        self._insert(row, f"source {name!r}")
        return _source(row)

    def sources(self, namespace: str | None = None) -> list[Source]:
        query = select(SourceRow).order_by(SourceRow.name)
        if namespace is not None:
            query = query.where(SourceRow.namespace == namespace)
        with self._sessions() as session:
            return [_source(row) for row in session.scalars(query)]

    def delete_source(self, namespace: str, name: str) -> Source:
        with self._sessions.begin() as session:
            row = session.scalars(select(SourceRow).where(
                SourceRow.namespace == namespace, SourceRow.name == name)).first()
            if row is None:
                raise NotFound(f"source {name!r} not found")
            gone = _source(row)
            session.delete(row)
            return gone
