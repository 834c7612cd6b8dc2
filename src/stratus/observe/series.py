"""Per-deployment time series for the dashboard: one bucket a second for the last 15 minutes,
fed by the dispatcher's outcomes and a sampler of the controller's pools."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from array import array
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from stratus.control.unit import DeploymentUnit
from stratus.dispatch.outcomes import Outcome
from stratus.dispatch.pool import ReplicaState

KEEP_S = 900  # seconds of buckets per deployment
SAMPLE_PER_BUCKET = 64  # latencies kept per second; beyond that a uniform reservoir
RECENT = 100  # recent invocations kept per deployment
SAMPLE_EVERY_S = 0.25  # a burst shorter than a second still shows in the bucket's peak

Key = tuple[str, str]
log = logging.getLogger("stratus.series")


@dataclass(slots=True)
class Bucket:
    """One second of one deployment. Gauges hold the peak seen by the sampler in that second."""

    second: int
    requests: int = 0
    errors: int = 0
    cold_start_requests: int = 0  # requests that waited for a replica to start
    replica_starts: int = 0  # replicas that started (fork to ready)
    # Unboxed: as a list of floats a busy second's sample took 2 KiB, not 0.6 (the soak's
    # RSS slope: four deployments' 900 s of buckets filling, docs/reliability.md).
    latencies: array[float] = field(default_factory=lambda: array("d"))
    concurrency: int = 0  # requests in the system (running or queued), at its peak
    queued: int = 0
    ready: int = 0
    starting: int = 0
    draining: int = 0
    desired: int = 0
    sampled: bool = False

    def add_latency(self, latency_s: float, rng: random.Random) -> None:
        if len(self.latencies) < SAMPLE_PER_BUCKET:
            self.latencies.append(latency_s)
            return
        slot = rng.randrange(self.requests)  # reservoir: each latency kept with equal chance
        if slot < SAMPLE_PER_BUCKET:
            self.latencies[slot] = latency_s


class DeploymentSeries:
    """A deployment's buckets, oldest first, and its most recent invocations."""

    __slots__ = ("buckets", "recent")

    def __init__(self) -> None:
        self.buckets: deque[Bucket] = deque()
        self.recent: deque[Outcome] = deque(maxlen=RECENT)  # shaped for the API when read

    def bucket(self, second: int) -> Bucket | None:
        """The bucket of ``second``, created if need be; None when older than what is kept."""
        buckets = self.buckets
        if not buckets or second > buckets[-1].second:
            buckets.append(Bucket(second))
            while buckets[0].second <= second - KEEP_S:
                buckets.popleft()
            return buckets[-1]
        if second <= buckets[-1].second - KEEP_S:
            return None
        # A late outcome lands a second or two back: search from the newest end.
        for index in range(len(buckets) - 1, -1, -1):
            if buckets[index].second == second:
                return buckets[index]
            if buckets[index].second < second:
                buckets.insert(index + 1, Bucket(second))
                return buckets[index + 1]
        buckets.appendleft(Bucket(second))
        return buckets[0]

    def window(self, since: int) -> list[Bucket]:
        return [bucket for bucket in self.buckets if bucket.second >= since]


def weighted_percentile(buckets: list[Bucket], q: float) -> float | None:
    """The ``q`` percentile (0..100) of the buckets' latency samples, each sample weighted by
    how many requests its bucket's sample stands for, so a busy second counts for more."""
    weighted = sorted(
        (latency, bucket.requests / len(bucket.latencies))
        for bucket in buckets if bucket.latencies for latency in bucket.latencies
    )
    if not weighted:
        return None
    goal = q / 100 * sum(weight for _, weight in weighted)
    seen = 0.0
    for latency, weight in weighted:
        seen += weight
        if seen >= goal:
            return latency
    return weighted[-1][0]


def _ms(value: float | None) -> float | None:
    return round(value * 1000, 3) if value is not None else None


class SeriesBook:
    """Every deployment's series. ``observe`` is a dispatcher listener; ``run`` the sampler of
    ``units``, the controller's live map of deployments."""

    def __init__(self, units: dict[Key, DeploymentUnit]) -> None:
        self.units = units
        self.series: dict[Key, DeploymentSeries] = {}
        self.rng = random.Random()
        self._task: asyncio.Task[None] | None = None

    def _of(self, key: Key) -> DeploymentSeries:
        found = self.series.get(key)
        if found is None:
            found = self.series[key] = DeploymentSeries()
        return found

    # -- feeding ------------------------------------------------------------------------
    def observe(self, outcome: Outcome) -> None:
        """Count one finished invocation. Shadow copies are left out: nobody saw their answer."""
        if outcome.shadow:
            return
        series = self._of((outcome.namespace, outcome.deployment))
        bucket = series.bucket(int(outcome.at))
        if bucket is not None:
            bucket.requests += 1
            bucket.errors += not outcome.ok
            bucket.cold_start_requests += outcome.cold_start
            bucket.add_latency(outcome.latency_s, self.rng)
        series.recent.append(outcome)

    def replica_started(self, namespace: str, deployment: str, seconds: float,
                        wall: float | None = None) -> None:
        """Count one replica start (the reconciler's callback; ``seconds`` is how long it took)."""
        bucket = self._of((namespace, deployment)).bucket(int(time.time() if wall is None else wall))
        if bucket is not None:
            bucket.replica_starts += 1

    def sample(self, wall: float | None = None) -> None:
        """Read every deployment's pools into the current second's bucket."""
        second = int(time.time() if wall is None else wall)
        units = self.units
        for key in [key for key in self.series if key not in units]:
            del self.series[key]  # deleted deployments
        for key, unit in list(units.items()):
            bucket = self._of(key).bucket(second)
            if bucket is not None:
                _sample_unit(unit, bucket)

    async def run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:  # a bad sample must not end the series
                log.exception("sampling the series failed")
            await asyncio.sleep(SAMPLE_EVERY_S)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- reading ------------------------------------------------------------------------
    def points(self, key: Key, window_s: int, now: float | None = None) -> dict[str, Any]:
        """Columns of the last ``window_s`` seconds, one entry a second, gaps filled: zero for
        counts, None for latency, the last sampled value for gauges (none when never sampled)."""
        end = int(time.time() if now is None else now)
        start = end - window_s + 1
        found = {bucket.second: bucket for bucket in self._of(key).window(start)}
        columns: dict[str, list[Any]] = {name: [] for name in (
            "t", "requests", "errors", "cold_start_requests", "replica_starts", "p50_ms", "p99_ms",
            "concurrency",
            "queued", "ready", "starting", "draining", "desired")}
        last: Bucket | None = None
        for second in range(start, end + 1):
            bucket = found.get(second)
            columns["t"].append(second)
            columns["requests"].append(bucket.requests if bucket else 0)
            columns["errors"].append(bucket.errors if bucket else 0)
            columns["cold_start_requests"].append(bucket.cold_start_requests if bucket else 0)
            columns["replica_starts"].append(bucket.replica_starts if bucket else 0)
            sample = [bucket] if bucket else []
            columns["p50_ms"].append(_ms(weighted_percentile(sample, 50)))
            columns["p99_ms"].append(_ms(weighted_percentile(sample, 99)))
            if bucket is not None and bucket.sampled:
                last = bucket
            for gauge in ("concurrency", "queued", "ready", "starting", "draining", "desired"):
                columns[gauge].append(getattr(last, gauge) if last is not None else None)
        return {"window_s": window_s, "step_s": 1, **columns}

    def summary(self, key: Key, window_s: int, now: float | None = None) -> dict[str, Any]:
        """Totals over the last ``window_s`` seconds: RPS, p50/p99, error ratio, requests that
        waited for a replica to start, and replica starts."""
        end = int(time.time() if now is None else now)
        buckets = self._of(key).window(end - window_s + 1)
        requests = sum(bucket.requests for bucket in buckets)
        errors = sum(bucket.errors for bucket in buckets)
        return {
            "window_s": window_s,
            "requests": requests,
            "rps": round(requests / window_s, 3),
            "errors": errors,
            "error_ratio": round(errors / requests, 4) if requests else None,
            "cold_start_requests": sum(bucket.cold_start_requests for bucket in buckets),
            "replica_starts": sum(bucket.replica_starts for bucket in buckets),
            "p50_ms": _ms(weighted_percentile(buckets, 50)),
            "p99_ms": _ms(weighted_percentile(buckets, 99)),
        }

    def recent(self, key: Key, limit: int) -> list[dict[str, Any]]:
        """The newest invocations first."""
        recent = self._of(key).recent
        return [_invocation(recent[-index]) for index in range(1, min(limit, len(recent)) + 1)]


def _sample_unit(unit: DeploymentUnit, bucket: Bucket) -> None:
    pools = [live.pool for live in unit.revisions.values()]
    shadow = unit.routing.shadow
    client_pools = [live.pool for number, live in unit.revisions.items() if number != shadow]
    bucket.concurrency = max(bucket.concurrency, sum(pool.load.current for pool in client_pools))
    bucket.queued = max(bucket.queued, sum(len(pool.waiters) for pool in client_pools))
    bucket.ready = max(bucket.ready, sum(pool.count(ReplicaState.READY) for pool in pools))
    bucket.starting = max(bucket.starting, sum(pool.count(ReplicaState.STARTING) for pool in pools))
    bucket.draining = max(bucket.draining, sum(pool.count(ReplicaState.DRAINING) for pool in pools))
    bucket.desired = unit.decision.desired
    bucket.sampled = True


def _invocation(outcome: Outcome) -> dict[str, Any]:
    return {
        "at": round(outcome.at, 3), "request_id": outcome.request_id,
        "revision": outcome.revision, "status": outcome.status, "ok": outcome.ok,
        "latency_ms": round(outcome.latency_s * 1000, 3),
        "queue_wait_ms": round(outcome.queue_wait_s * 1000, 3),
        "cold_start": outcome.cold_start, "protocol": outcome.protocol,
        "replica_id": outcome.replica_id, "error_type": outcome.error_type,
    }
