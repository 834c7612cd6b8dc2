"""The per-request Prometheus metrics, read back from a registry of their own."""

from __future__ import annotations

import os
import random
import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from stratus.dispatch.outcomes import Outcome
from stratus.observe.metrics import cpu_seconds
from stratus.observe.request_metrics import LATENCY_BUCKETS, RequestMetrics
from stratus.observe.request_series import RequestSeries
from stratus.store.usage import UsageRecord


def _outcome(status: int = 200, shadow: bool = False, wait: float = 0.0) -> Outcome:
    return Outcome(namespace="ns", deployment="d", revision=2, ok=status < 500, latency_s=0.004,
                   shadow=shadow, at=0.0, request_id="r", protocol="v2", status=status,
                   queue_wait_s=wait, cold_start=wait > 0, replica_id="d-2-x")


def _record(prompt: int, completion: int, gb_seconds: float) -> UsageRecord:
    return UsageRecord(namespace="ns", deployment="d", revision=2, request_id="r",
                       replica_id="d-2-x", protocol="openai", status=200, shadow=False,
                       cold_start=False, started_at=0.0, duration_s=1.0, queue_wait_s=0.0,
                       memory_limit_mb=None, peak_rss_bytes=0, billed_memory_mb=128,
                       gb_seconds=gb_seconds, prompt_tokens=prompt, completion_tokens=completion)


def test_requests_are_counted_by_status_and_timed_but_shadow_copies_are_not() -> None:
    registry = CollectorRegistry()
    metrics = RequestMetrics(registry)
    for outcome in (_outcome(), _outcome(), _outcome(500), _outcome(shadow=True), _outcome(wait=0.2)):
        metrics.observe(outcome)
    labels = {"namespace": "ns", "deployment": "d", "revision": "2", "protocol": "v2"}
    assert registry.get_sample_value("stratus_requests_total", {**labels, "code": "200"}) == 3
    assert registry.get_sample_value("stratus_requests_total", {**labels, "code": "500"}) == 1
    assert registry.get_sample_value("stratus_request_duration_seconds_count", labels) == 4
    assert registry.get_sample_value("stratus_request_duration_seconds_bucket",
                                     {**labels, "le": "0.005"}) == 4
    wait = {"namespace": "ns", "deployment": "d"}
    assert registry.get_sample_value("stratus_queue_wait_seconds_sum", wait) == 0.2
    metrics.replica_started("ns", "d", 0.03)
    assert registry.get_sample_value("stratus_cold_starts_total", wait) == 1
    assert registry.get_sample_value("stratus_cold_start_duration_seconds_bucket",
                                     {**wait, "le": "0.05"}) == 1


def test_metered_tokens_and_gb_seconds_add_up_and_a_deleted_deployment_goes() -> None:
    registry = CollectorRegistry()
    metrics = RequestMetrics(registry)
    metrics.metered([_record(7, 3, 0.125), _record(5, 0, 0.25)])
    key = {"namespace": "ns", "deployment": "d"}
    assert registry.get_sample_value("stratus_tokens_total", {**key, "kind": "prompt"}) == 12
    assert registry.get_sample_value("stratus_tokens_total", {**key, "kind": "completion"}) == 3
    assert registry.get_sample_value("stratus_invocation_gb_seconds_total", key) == 0.375
    metrics.observe(_outcome())
    metrics.forget("ns", "d")
    assert registry.get_sample_value(
        "stratus_requests_total", {**key, "revision": "2", "protocol": "v2", "code": "200"}) is None


def test_cpu_seconds_are_read_from_proc_and_none_for_a_gone_process() -> None:
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:  # burn a few clock ticks of CPU
        pass
    used = cpu_seconds(os.getpid())
    assert used is not None and used >= 0.05
    assert cpu_seconds(2**22 + 1) is None


def test_the_series_expose_what_prometheus_clients_own_metrics_would() -> None:
    """The collector replaces ``Counter`` and ``Histogram`` on the request path: for the same
    observations, a scrape reads the same text (less the ``_created`` timestamps)."""
    rng = random.Random(7)
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    series = RequestSeries(LATENCY_BUCKETS)
    ours.register(series)
    labels = ("namespace", "deployment", "revision", "protocol")
    requests = Counter("stratus_requests", "Finished client requests by status code",
                       [*labels, "code"], registry=theirs)
    duration = Histogram("stratus_request_duration_seconds",
                         "Time from arrival at the dispatcher to the answer", labels,
                         buckets=LATENCY_BUCKETS, registry=theirs)
    wait = Histogram("stratus_queue_wait_seconds", "Time a request was held for a replica slot "
                     "(cold starts included); 0 for one that found a free slot",
                     ("namespace", "deployment"), buckets=LATENCY_BUCKETS, registry=theirs)
    for _ in range(500):
        key = (rng.choice(["ns", "other"]), "d", rng.choice(["1", "2"]), "native",
               rng.choice(["200", "500"]))
        latency = rng.choice([0.0, 0.0005, 0.001, 120.0, 500.0]) or rng.expovariate(10)
        queued = rng.choice([0.0, rng.expovariate(2)])
        series.add(key, latency, queued)
        requests.labels(*key).inc()
        duration.labels(*key[:4]).observe(latency)
        wait.labels(*key[:2]).observe(queued)

    def scrape(registry: CollectorRegistry) -> list[str]:
        lines = generate_latest(registry).decode().splitlines()
        return sorted(line for line in lines if "_created" not in line)

    assert scrape(ours) == scrape(theirs)
    series.forget("ns", "d")
    assert all('namespace="ns"' not in line for line in scrape(ours))
