"""Tables of the jobs' event log and of the projections folded from it."""

from __future__ import annotations

from sqlalchemy import BigInteger, Float, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from stratus.store.tables import Base


class JobEventRow(Base):
    """The log: append-only, the only record a job's state is derived from. ``id`` is the
    global order of appends, ``seq`` a job's own; ``data`` is JSON text."""

    __tablename__ = "job_events"
    __table_args__ = (UniqueConstraint("job_id", "seq"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    namespace: Mapped[str] = mapped_column(String(63), nullable=False)
    job_id: Mapped[str] = mapped_column(String(40), nullable=False)
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    type: Mapped[str] = mapped_column(String(32), nullable=False)
    at: Mapped[float] = mapped_column(Float, nullable=False)  # Unix seconds
    data: Mapped[str] = mapped_column(Text, nullable=False)


class JobProjectionRow(Base):
    """A projection: each job's folded state (``state`` is its JSON), with the columns the list
    filters and sorts by. Rebuilt from ``job_events`` at will."""

    __tablename__ = "job_states"
    __table_args__ = (Index("ix_job_states_namespace_submitted", "namespace", "submitted_at"),
                      Index("ix_job_states_status", "status"))

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    namespace: Mapped[str] = mapped_column(String(63), nullable=False)
    experiment: Mapped[str | None] = mapped_column(String(63), nullable=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    submitted_at: Mapped[float] = mapped_column(Float, nullable=False)
    last_seq: Mapped[int] = mapped_column(Integer, nullable=False)
    state: Mapped[str] = mapped_column(Text, nullable=False)


class JobMetricRow(Base):
    """A projection: the metric curves, one row per (job, metric, step)."""

    __tablename__ = "job_metrics"

    job_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[float] = mapped_column(Float, nullable=False)
