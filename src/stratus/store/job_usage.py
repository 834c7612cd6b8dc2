"""Usage records of jobs: one per worker run, with its wall time, CPU seconds and GB-seconds,
summed for the cost report beside the invocations'."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import BigInteger, Engine, Float, Index, Integer, String, func, insert, select
from sqlalchemy.orm import Mapped, mapped_column

from stratus.store.tables import Base


class JobUsageRow(Base):
    __tablename__ = "job_usage"
    __table_args__ = (Index("ix_job_usage_namespace_started_at", "namespace", "started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    namespace: Mapped[str] = mapped_column(String(63), nullable=False)
    job_id: Mapped[str] = mapped_column(String(40), nullable=False)
    worker_id: Mapped[str] = mapped_column(String(64), nullable=False)
    experiment: Mapped[str | None] = mapped_column(String(63), nullable=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # how the run ended
    started_at: Mapped[float] = mapped_column(Float, nullable=False)  # Unix seconds
    duration_s: Mapped[float] = mapped_column(Float, nullable=False)
    cpu_seconds: Mapped[float] = mapped_column(Float, nullable=False)
    memory_limit_mb: Mapped[int | None] = mapped_column(Integer, nullable=True)
    peak_rss_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    billed_memory_mb: Mapped[int] = mapped_column(Integer, nullable=False)
    gb_seconds: Mapped[float] = mapped_column(Float, nullable=False)


@dataclass(frozen=True)
class JobUsageRecord:
    namespace: str
    job_id: str
    worker_id: str
    experiment: str | None
    status: str
    started_at: float
    duration_s: float
    cpu_seconds: float
    memory_limit_mb: int | None
    peak_rss_bytes: int
    billed_memory_mb: int
    gb_seconds: float


@dataclass(frozen=True)
class JobUsageTotals:
    runs: int = 0
    jobs: int = 0
    duration_s: float = 0.0
    cpu_seconds: float = 0.0
    gb_seconds: float = 0.0


class JobUsageStore:
    """Synchronous repository; callers run it off the event loop."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def write(self, record: JobUsageRecord) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(JobUsageRow), [asdict(record)])

    def totals(self, namespace: str, since: float, until: float) -> JobUsageTotals:
        """Runs that started in [since, until)."""
        query = (select(func.count(), func.count(func.distinct(JobUsageRow.job_id)),
                        func.sum(JobUsageRow.duration_s), func.sum(JobUsageRow.cpu_seconds),
                        func.sum(JobUsageRow.gb_seconds))
                 .where(JobUsageRow.namespace == namespace, JobUsageRow.started_at >= since,
                        JobUsageRow.started_at < until))
        with self.engine.connect() as conn:
            runs, jobs, seconds, cpu, gbs = conn.execute(query).one()
        return JobUsageTotals(int(runs), int(jobs), float(seconds or 0), float(cpu or 0),
                              float(gbs or 0))

    def records(self, namespace: str, job_id: str) -> list[dict[str, Any]]:
        query = (select(JobUsageRow).where(JobUsageRow.namespace == namespace,
                                           JobUsageRow.job_id == job_id)
                 .order_by(JobUsageRow.started_at))
        fields = JobUsageRecord.__dataclass_fields__
        with self.engine.connect() as conn:
            return [{name: getattr(row, name) for name in fields} for row in conn.execute(query)]
