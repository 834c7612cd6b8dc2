"""Per-request Prometheus metrics, fed by the dispatcher's outcome listeners: requests by
status, their duration and queue wait, and replica cold starts. Label sets stay bounded:
namespace, deployment, revision, protocol and status code, never a request id."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Histogram

from stratus.dispatch.outcomes import Outcome
from stratus.observe.request_series import RequestSeries
from stratus.resilience.retry import Denied
from stratus.store.usage import UsageRecord

# Sub-millisecond to a minute: a no-op answers in ~0.2 ms, an LLM stream in tens of seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0, 30.0, 60.0, 120.0)
START_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class RequestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.series = RequestSeries(LATENCY_BUCKETS)
        registry.register(self.series)
        self.cold_starts = Counter("stratus_cold_starts", "Replicas started and ready to serve",
                                   ("namespace", "deployment"), registry=registry)
        self.cold_start_duration = Histogram(
            "stratus_cold_start_duration_seconds",
            "From a replica's start (fork from its zygote) to ready (init done)",
            ("namespace", "deployment"), buckets=START_BUCKETS, registry=registry)
        self.tokens = Counter("stratus_tokens", "Tokens billed to LLM and embedding requests",
                              ("namespace", "deployment", "kind"), registry=registry)
        self.gb_seconds = Counter("stratus_invocation_gb_seconds",
                                  "Billed memory times billed duration of invocations (see "
                                  "docs/observability.md, Usage and cost)",
                                  ("namespace", "deployment"), registry=registry)
        self.retries = Counter("stratus_retries", "Requests sent again after a lost attempt "
                               "(retries of lost work)", ("namespace", "deployment"),
                               registry=registry)
        self.retries_denied = Counter(
            "stratus_retries_denied", "Failed requests that were not sent again, by reason "
            "(budget, delivered, attempts, deadline, streamed)",
            ("namespace", "deployment", "reason"), registry=registry)

    def observe(self, outcome: Outcome) -> None:
        """A dispatcher listener; shadow copies are no client's requests and are not counted."""
        if outcome.shadow:
            return
        self.series.add((outcome.namespace, outcome.deployment, str(outcome.revision),
                         outcome.protocol, str(outcome.status)),
                        outcome.latency_s, outcome.queue_wait_s)
        if outcome.attempt > 1:
            self.retries.labels(outcome.namespace, outcome.deployment).inc(outcome.attempt - 1)
        denied = outcome.retry_denied
        if denied is not None and denied != "not_retryable":
            self.retries_denied.labels(outcome.namespace, outcome.deployment, denied).inc()

    def metered(self, records: list[UsageRecord]) -> None:
        """A usage-meter callback, once per batch: tokens and GB-seconds as the bill counts
        them (shadow copies included: they used real replicas). Summed per deployment first:
        a label lookup per record cost more than the record."""
        sums: dict[tuple[str, str], list[float]] = {}
        for record in records:
            total = sums.get((record.namespace, record.deployment))
            if total is None:
                total = sums[(record.namespace, record.deployment)] = [0.0, 0, 0]
            total[0] += record.gb_seconds
            total[1] += record.prompt_tokens
            total[2] += record.completion_tokens
        for key, (gb_seconds, prompt, completion) in sums.items():
            self.gb_seconds.labels(*key).inc(gb_seconds)
            if prompt:
                self.tokens.labels(*key, "prompt").inc(prompt)
            if completion:
                self.tokens.labels(*key, "completion").inc(completion)

    def replica_started(self, namespace: str, deployment: str, seconds: float) -> None:
        self.cold_starts.labels(namespace, deployment).inc()
        self.cold_start_duration.labels(namespace, deployment).observe(seconds)

    def forget(self, namespace: str, deployment: str) -> None:
        """A deleted deployment's series go, so label sets do not grow without bound."""
        self.series.forget(namespace, deployment)
        for metric in (self.cold_starts, self.cold_start_duration,
                       self.gb_seconds, self.retries):
            with contextlib.suppress(KeyError):
                metric.remove(namespace, deployment)
        for reason in Denied:
            with contextlib.suppress(KeyError):
                self.retries_denied.remove(namespace, deployment, reason.value)
