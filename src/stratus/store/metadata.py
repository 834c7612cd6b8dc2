"""The metadata store: deployments and their immutable, numbered revisions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from stratus.security.quotas import Admit, Footprint
from stratus.spec import RuntimeSpec, ScalingSpec
from stratus.store.tables import DeploymentRow, RevisionRow


class RevisionStatus:
    READY = "ready"  # imported and validated; serves when traffic reaches it
    FAILED = "failed"


@dataclass(frozen=True)
class RevisionRecord:
    number: int
    runtime: RuntimeSpec
    code_meta: dict[str, Any]
    status: str
    reason: str | None
    created_at: datetime


@dataclass(frozen=True)
class DeploymentRecord:
    namespace: str
    name: str
    latest_revision: int
    serving_revision: int | None
    routing: dict[str, Any] | None
    scaling: ScalingSpec
    created_at: datetime
    updated_at: datetime


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; every one stored is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _deployment(row: DeploymentRow) -> DeploymentRecord:
    return DeploymentRecord(
        namespace=row.namespace,
        name=row.name,
        latest_revision=row.latest_revision,
        serving_revision=row.serving_revision,
        routing=dict(row.routing) if row.routing else None,
        scaling=ScalingSpec.model_validate(row.scaling),
        created_at=_aware(row.created_at),
        updated_at=_aware(row.updated_at),
    )


def _revision(row: RevisionRow) -> RevisionRecord:
    return RevisionRecord(
        number=row.number,
        runtime=RuntimeSpec.model_validate(row.spec),
        code_meta=dict(row.code_meta),
        status=row.status,
        reason=row.reason,
        created_at=_aware(row.created_at),
    )


def _lock_namespace(session: Session, namespace: str) -> None:
    """Hold the namespace's lock until the transaction ends. An upsert, the transaction's
    first statement: on PostgreSQL it locks the namespace's row (another deploy of the
    namespace waits for the commit; other namespaces do not); on SQLite any write takes the
    database's write lock, and being first it comes before every read, which the driver would
    otherwise run outside the transaction (it begins one only at the first write)."""
    session.execute(text("INSERT INTO namespace_locks (namespace) VALUES (:namespace) "
                         "ON CONFLICT (namespace) DO UPDATE SET namespace = excluded.namespace"),
                    {"namespace": namespace})


def _footprints(session: Session, namespace: str) -> list[Footprint]:
    """What each recorded deployment of the namespace may claim: its ``max_replicas`` and its
    latest revision's ``memory_mb``."""
    query = (select(DeploymentRow.name, DeploymentRow.scaling, RevisionRow.spec)
             .join(RevisionRow, (RevisionRow.deployment_id == DeploymentRow.id)
                   & (RevisionRow.number == DeploymentRow.latest_revision))
             .where(DeploymentRow.namespace == namespace))
    return [Footprint(name, ScalingSpec.model_validate(scaling).max_replicas,
                      spec.get("memory_mb"))
            for name, scaling, spec in session.execute(query)]


class MetadataStore:
    """Synchronous repository; the controller calls it off the event loop."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def _find(self, session: Session, namespace: str, name: str) -> DeploymentRow | None:
        query = select(DeploymentRow).where(
            DeploymentRow.namespace == namespace, DeploymentRow.name == name
        )
        return session.scalars(query).one_or_none()

    def list_deployments(self, namespace: str | None = None) -> list[DeploymentRecord]:
        with self._sessions() as session:
            query = select(DeploymentRow).order_by(DeploymentRow.namespace, DeploymentRow.name)
            if namespace is not None:
                query = query.where(DeploymentRow.namespace == namespace)
            return [_deployment(row) for row in session.scalars(query)]

    def get_deployment(self, namespace: str, name: str) -> DeploymentRecord | None:
        with self._sessions() as session:
            row = self._find(session, namespace, name)
            return _deployment(row) if row is not None else None

    def get_revision(self, namespace: str, name: str, number: int) -> RevisionRecord | None:
        with self._sessions() as session:
            row = self._find(session, namespace, name)
            if row is None:
                return None
            query = select(RevisionRow).where(
                RevisionRow.deployment_id == row.id, RevisionRow.number == number
            )
            revision = session.scalars(query).one_or_none()
            return _revision(revision) if revision is not None else None

    def list_revisions(self, namespace: str, name: str) -> list[RevisionRecord]:
        with self._sessions() as session:
            row = self._find(session, namespace, name)
            if row is None:
                return []
            query = (
                select(RevisionRow)
                .where(RevisionRow.deployment_id == row.id)
                .order_by(RevisionRow.number)
            )
            return [_revision(r) for r in session.scalars(query)]

    def apply(
        self,
        namespace: str,
        name: str,
        runtime: RuntimeSpec,
        scaling: ScalingSpec,
        code_meta: dict[str, Any],
        admit: Admit | None = None,
    ) -> tuple[DeploymentRecord, RevisionRecord, bool]:
        """Record a spec. A new revision is created only when the runtime spec changed.

        With ``admit``, the namespace's deploys are serialised: this transaction first takes
        the namespace's lock, then ``admit`` judges the deployments recorded (committed by
        every deploy before it, on any server sharing the database) and may raise to refuse.
        """
        digest = runtime.digest()
        now = _now()
        with self._sessions.begin() as session:
            if admit is not None:
                _lock_namespace(session, namespace)
                admit(_footprints(session, namespace))
            row = self._find(session, namespace, name)
            if row is None:
                row = DeploymentRow(
                    namespace=namespace, name=name, latest_revision=0, serving_revision=None,
                    scaling={}, created_at=now, updated_at=now,
                )
                session.add(row)
                session.flush()
            latest = None
            if row.latest_revision:
                query = select(RevisionRow).where(
                    RevisionRow.deployment_id == row.id,
                    RevisionRow.number == row.latest_revision,
                )
                latest = session.scalars(query).one()
            created = latest is None or latest.spec_digest != digest
            if created:
                latest = RevisionRow(
                    deployment_id=row.id, number=row.latest_revision + 1,
                    spec=runtime.model_dump(), spec_digest=digest, code_meta=code_meta,
                    status=RevisionStatus.READY, reason=None, created_at=now,
                )
                session.add(latest)
                row.latest_revision = latest.number
            assert latest is not None
            row.scaling = scaling.model_dump()
            row.updated_at = now
            session.flush()
            return _deployment(row), _revision(latest), created

    # The updates below are one UPDATE statement each, not a read then a write: the driver
    # runs a read outside the transaction, so a deployment deleted between the two made the
    # ORM's write fail (StaleDataError), and that failure was a later deploy's 500.
    def _update_deployment(self, namespace: str, name: str, **values: Any) -> None:
        with self._sessions.begin() as session:
            session.execute(update(DeploymentRow)
                            .where(DeploymentRow.namespace == namespace,
                                   DeploymentRow.name == name)
                            .values(**values, updated_at=_now()))

    def update_scaling(self, namespace: str, name: str, scaling: ScalingSpec) -> None:
        self._update_deployment(namespace, name, scaling=scaling.model_dump())

    def set_serving(self, namespace: str, name: str, revision: int) -> None:
        self._update_deployment(namespace, name, serving_revision=revision)

    def set_routing(self, namespace: str, name: str, routing: dict[str, Any]) -> None:
        self._update_deployment(namespace, name, routing=routing,
                                serving_revision=routing.get("stable"))

    def set_revision_status(
        self, namespace: str, name: str, number: int, status: str, reason: str | None
    ) -> None:
        deployment = select(DeploymentRow.id).where(DeploymentRow.namespace == namespace,
                                                    DeploymentRow.name == name)
        with self._sessions.begin() as session:
            session.execute(update(RevisionRow)
                            .where(RevisionRow.deployment_id == deployment.scalar_subquery(),
                                   RevisionRow.number == number)
                            .values(status=status, reason=reason))

    def delete_deployment(self, namespace: str, name: str) -> bool:
        with self._sessions.begin() as session:
            row = self._find(session, namespace, name)
            if row is None:
                return False
            session.delete(row)
            return True

    def all_bundles(self) -> set[str]:
        """The code bundle of every recorded revision (for garbage collection)."""
        with self._sessions() as session:
            return {str(spec.get("bundle")) for spec in session.scalars(select(RevisionRow.spec))}
