"""SQLAlchemy table definitions of the metadata store."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    literal_column,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class DeploymentRow(Base):
    __tablename__ = "deployments"
    __table_args__ = (UniqueConstraint("namespace", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    namespace: Mapped[str] = mapped_column(String(63), nullable=False, index=True)
    name: Mapped[str] = mapped_column(String(63), nullable=False)
    latest_revision: Mapped[int] = mapped_column(Integer, nullable=False)
    serving_revision: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the stable one
    # Traffic split, shadow, sticky key, rollout in flight and recent routing events.
    routing: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    scaling: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    revisions: Mapped[list[RevisionRow]] = relationship(
        back_populates="deployment", cascade="all, delete-orphan", passive_deletes=True
    )


class RevisionRow(Base):
    __tablename__ = "revisions"
    __table_args__ = (UniqueConstraint("deployment_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    deployment_id: Mapped[int] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), nullable=False, index=True
    )
    number: Mapped[int] = mapped_column(Integer, nullable=False)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    spec_digest: Mapped[str] = mapped_column(String(64), nullable=False)
    code_meta: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    deployment: Mapped[DeploymentRow] = relationship(back_populates="revisions")


class NamespaceLockRow(Base):
    """One row per namespace, written first by each transaction that must not interleave with
    another of the same namespace's (a deploy checked against the namespace's quota): the
    write holds the row's lock (PostgreSQL) or the database's (SQLite) until it commits."""

    __tablename__ = "namespace_locks"

    namespace: Mapped[str] = mapped_column(String(63), primary_key=True)


class ModelRow(Base):
    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("namespace", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    namespace: Mapped[str] = mapped_column(String(63), nullable=False, index=True)
    name: Mapped[str] = mapped_column(String(63), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    versions: Mapped[list[ModelVersionRow]] = relationship(
        back_populates="model", cascade="all, delete-orphan", passive_deletes=True
    )


class ModelVersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(
        ForeignKey("models.id", ondelete="CASCADE"), nullable=False, index=True
    )
    version: Mapped[str] = mapped_column(String(64), nullable=False)
    major: Mapped[int] = mapped_column(Integer, nullable=False)
    minor: Mapped[int] = mapped_column(Integer, nullable=False)
    patch: Mapped[int] = mapped_column(Integer, nullable=False)
    stage: Mapped[str] = mapped_column(String(16), nullable=False)
    promoted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    format: Mapped[str] = mapped_column(String(32), nullable=False)
    files: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)  # path -> {sha256, size}
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    model: Mapped[ModelRow] = relationship(back_populates="versions")


class ExperimentRow(Base):
    """An experiment over a deployment's revisions, with what it has counted so far."""

    __tablename__ = "experiments"
    __table_args__ = (UniqueConstraint("namespace", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    namespace: Mapped[str] = mapped_column(String(63), nullable=False, index=True)
    name: Mapped[str] = mapped_column(String(63), nullable=False)
    deployment: Mapped[str] = mapped_column(String(63), nullable=False)
    variants: Mapped[list[Any]] = mapped_column(JSON, nullable=False)  # [[name, revision], ...]
    control: Mapped[str] = mapped_column(String(63), nullable=False)
    alpha: Mapped[float] = mapped_column(Float, nullable=False)
    traffic: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    sticky: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    conversions: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)  # variant -> count
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)  # variant -> counters
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class UsageRow(Base):
    """One invocation as it is billed: its time, memory, GB-seconds and tokens."""

    __tablename__ = "usage"
    __table_args__ = (Index("ix_usage_namespace_started_at", "namespace", "started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    namespace: Mapped[str] = mapped_column(String(63), nullable=False)
    deployment: Mapped[str] = mapped_column(String(63), nullable=False)
    revision: Mapped[int] = mapped_column(Integer, nullable=False)
    request_id: Mapped[str] = mapped_column(String(160), nullable=False)
    replica_id: Mapped[str] = mapped_column(String(64), nullable=False)
    protocol: Mapped[str] = mapped_column(String(16), nullable=False)
    status: Mapped[int] = mapped_column(Integer, nullable=False)
    shadow: Mapped[bool] = mapped_column(Boolean, nullable=False)
    cold_start: Mapped[bool] = mapped_column(Boolean, nullable=False)
    started_at: Mapped[float] = mapped_column(Float, nullable=False)  # Unix seconds
    duration_s: Mapped[float] = mapped_column(Float, nullable=False)  # on the replica, billed
    queue_wait_s: Mapped[float] = mapped_column(Float, nullable=False)
    memory_limit_mb: Mapped[int | None] = mapped_column(Integer, nullable=True)
    peak_rss_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)  # 0: not reported
    billed_memory_mb: Mapped[int] = mapped_column(Integer, nullable=False)
    gb_seconds: Mapped[float] = mapped_column(Float, nullable=False)
    prompt_tokens: Mapped[int] = mapped_column(Integer, nullable=False)
    completion_tokens: Mapped[int] = mapped_column(Integer, nullable=False)


class CapacityRow(Base):
    """Replicas kept up by one revision in one minute; revision 0 is the whole deployment, whose
    peak is not the sum of its revisions' peaks."""

    __tablename__ = "usage_capacity"
    __table_args__ = (UniqueConstraint("namespace", "deployment", "revision", "minute"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    namespace: Mapped[str] = mapped_column(String(63), nullable=False)
    deployment: Mapped[str] = mapped_column(String(63), nullable=False)
    revision: Mapped[int] = mapped_column(Integer, nullable=False)
    minute: Mapped[int] = mapped_column(BigInteger, nullable=False)  # Unix seconds, a multiple of 60
    observed_s: Mapped[float] = mapped_column(Float, nullable=False)
    peak_replicas: Mapped[int] = mapped_column(Integer, nullable=False)
    replica_seconds: Mapped[float] = mapped_column(Float, nullable=False)
    busy_replica_seconds: Mapped[float] = mapped_column(Float, nullable=False)


class AuditRow(Base):
    """One audit record, hash-chained to the one before it (``stratus.security.audit``). The
    writer assigns ids itself, in order, so a gap means a deleted record."""

    __tablename__ = "audit"
    __table_args__ = (Index("ix_audit_at", "at"), Index("ix_audit_namespace_at", "namespace", "at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[float] = mapped_column(Float, nullable=False)  # Unix seconds
    namespace: Mapped[str] = mapped_column(String(63), nullable=False)  # "": unauthenticated
    actor: Mapped[str] = mapped_column(String(200), nullable=False)
    action: Mapped[str] = mapped_column(String(120), nullable=False)
    target: Mapped[str] = mapped_column(String(400), nullable=False)
    source: Mapped[str] = mapped_column(String(64), nullable=False)
    result: Mapped[str] = mapped_column(String(16), nullable=False)
    status: Mapped[int] = mapped_column(Integer, nullable=False)
    request_id: Mapped[str] = mapped_column(String(128), nullable=False)
    prev_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)


class ScheduleRow(Base):
    """A cron trigger (``stratus.triggers``): at each tick, invokes a deployment with a fixed
    payload (target "invocation") or submits a training job (target "job")."""

    __tablename__ = "schedules"
    __table_args__ = (UniqueConstraint("namespace", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    namespace: Mapped[str] = mapped_column(String(63), nullable=False)
    name: Mapped[str] = mapped_column(String(63), nullable=False)
    cron: Mapped[str] = mapped_column(String(200), nullable=False)
    timezone: Mapped[str] = mapped_column(String(64), nullable=False)
    target: Mapped[str] = mapped_column(String(16), nullable=False, default="invocation",
                                        server_default="invocation")
    deployment: Mapped[str | None] = mapped_column(String(63), nullable=True)  # an invocation's
    payload: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON; an invocation's
    job: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON of POST /api/jobs's body
    catch_up: Mapped[str] = mapped_column(String(8), nullable=False)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)  # Unix seconds
    last_fired: Mapped[float | None] = mapped_column(Float, nullable=True)  # the latest tick done


class TopicRow(Base):
    """A pub/sub topic; each published CloudEvent goes to its matching subscriptions."""

    __tablename__ = "topics"
    __table_args__ = (UniqueConstraint("namespace", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    namespace: Mapped[str] = mapped_column(String(63), nullable=False)
    name: Mapped[str] = mapped_column(String(63), nullable=False)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)

    subscriptions: Mapped[list[SubscriptionRow]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True
    )


class SubscriptionRow(Base):
    __tablename__ = "topic_subscriptions"
    __table_args__ = (UniqueConstraint("topic_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    topic_id: Mapped[int] = mapped_column(
        ForeignKey("topics.id", ondelete="CASCADE"), nullable=False, index=True
    )
    name: Mapped[str] = mapped_column(String(63), nullable=False)
    deployment: Mapped[str] = mapped_column(String(63), nullable=False)
    filter: Mapped[dict[str, str]] = mapped_column(JSON, nullable=False)  # attribute: exact value
    created_at: Mapped[float] = mapped_column(Float, nullable=False)


class SourceRow(Base):
    """An external queue the server consumes, invoking a deployment per message."""

    __tablename__ = "sources"
    __table_args__ = (UniqueConstraint("namespace", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    namespace: Mapped[str] = mapped_column(String(63), nullable=False)
    name: Mapped[str] = mapped_column(String(63), nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)  # "redis-stream"
    config: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)  # url, stream, group...
    deployment: Mapped[str] = mapped_column(String(63), nullable=False)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)


class AsyncInvocationRow(Base):
    """One asynchronous invocation (``stratus.queue.sql``). ``seq`` only grows: it breaks ties
    within a priority (first in, first out) and pages the newest first. Times are Unix seconds."""

    __tablename__ = "async_invocations"
    __table_args__ = (
        UniqueConstraint("namespace", "idempotency_key"),  # NULL keys do not collide
        Index("ix_async_invocations_claim", "namespace", "deployment", "status",
              literal_column("priority").desc(), "seq"),
        Index("ix_async_invocations_listing", "namespace", "seq"),
        Index("ix_async_invocations_lease", "status", "lease_until"),
        {"sqlite_autoincrement": True},  # never reuse a deleted row's seq
    )

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                     primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    namespace: Mapped[str] = mapped_column(String(63), nullable=False)
    deployment: Mapped[str] = mapped_column(String(63), nullable=False)
    payload: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    priority: Mapped[int] = mapped_column(Integer, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)
    updated_at: Mapped[float] = mapped_column(Float, nullable=False)
    not_before: Mapped[float] = mapped_column(Float, nullable=False)
    expires_at: Mapped[float] = mapped_column(Float, nullable=False)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    progress: Mapped[float | None] = mapped_column(Float, nullable=True)
    progress_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    result: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    revision: Mapped[int | None] = mapped_column(Integer, nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    pinned_revision: Mapped[int | None] = mapped_column(Integer, nullable=True)
    source: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    lease_owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_until: Mapped[float | None] = mapped_column(Float, nullable=True)

class WorkflowRow(Base):
    """A workflow's definition, as its author wrote it (YAML or JSON text)."""

    __tablename__ = "workflows"
    __table_args__ = (UniqueConstraint("namespace", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    namespace: Mapped[str] = mapped_column(String(63), nullable=False)
    name: Mapped[str] = mapped_column(String(63), nullable=False)
    definition: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)  # Unix seconds
    updated_at: Mapped[float] = mapped_column(Float, nullable=False)


class ExecutionRow(Base):
    """One run of a workflow, with the definition it started with (a redeploy changes only the
    runs that start after it). Input, output and error are JSON text."""

    __tablename__ = "workflow_executions"
    __table_args__ = (Index("ix_workflow_executions_namespace_created", "namespace", "created_at"),
                      Index("ix_workflow_executions_status", "status"))

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    namespace: Mapped[str] = mapped_column(String(63), nullable=False)
    workflow: Mapped[str] = mapped_column(String(63), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    definition: Mapped[str] = mapped_column(Text, nullable=False)
    input: Mapped[str] = mapped_column(Text, nullable=False)
    output: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class WorkflowStepRow(Base):
    """One step of an execution once it ended (succeeded, failed, or failed and caught); ``key``
    says where it ran (``3``, ``2/1/0``: a parallel's branch or a map's element)."""

    __tablename__ = "workflow_steps"

    execution_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    step: Mapped[str] = mapped_column(String(63), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    input: Mapped[str | None] = mapped_column(Text, nullable=True)
    output: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    chosen: Mapped[str | None] = mapped_column(String(63), nullable=True)
    started_at: Mapped[float] = mapped_column(Float, nullable=False)
    finished_at: Mapped[float] = mapped_column(Float, nullable=False)
