"""What a job's run is billed for, pure: its wall time, the CPU seconds its worker used, and
GB-seconds of the memory it reserved (its limit) or, without one, of its observed peak."""

from __future__ import annotations

from stratus.backends.base import WorkerExit
from stratus.cost import billed_memory_mb, gb_seconds
from stratus.store.job_usage import JobUsageRecord


def usage_record(*, namespace: str, job_id: str, worker_id: str, experiment: str | None,
                 status: str, memory_mb: int | None, started_at: float | None, ended_at: float,
                 ending: WorkerExit | None) -> JobUsageRecord | None:
    """None when no worker ever ran (it failed to start, or was cancelled while queued)."""
    if started_at is None:
        return None
    duration = max(0.0, ended_at - started_at)
    peak = ending.peak_rss if ending is not None else 0
    billed = billed_memory_mb(memory_mb, peak)
    return JobUsageRecord(
        namespace=namespace, job_id=job_id, worker_id=worker_id, experiment=experiment,
        status=status, started_at=started_at, duration_s=duration,
        cpu_seconds=ending.cpu_s if ending is not None else 0.0, memory_limit_mb=memory_mb,
        peak_rss_bytes=peak, billed_memory_mb=billed, gb_seconds=gb_seconds(billed, duration))
