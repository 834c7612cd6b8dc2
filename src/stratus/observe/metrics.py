"""Prometheus metrics read from the controller's state at scrape time, so the request path
pays nothing for them."""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from stratus.control.controller import Controller
from stratus.dispatch.pool import ReplicaState
from stratus.observe.resilience_metrics import ResilienceCollector
from stratus.sdk.batching import BUCKETS

STATES = (ReplicaState.STARTING, ReplicaState.READY, ReplicaState.DRAINING)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of a process, from /proc; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


class CpuAccount:
    """CPU seconds of each deployment's replicas, summed into a counter that keeps what
    replicas used after they stop (a counter never goes down)."""

    def __init__(self) -> None:
        self.totals: dict[tuple[str, str], float] = {}
        self._seen: dict[str, float] = {}  # replica id -> CPU seconds at the last scrape

    def update(self, controller: Controller) -> None:
        seen: dict[str, float] = {}
        totals: dict[tuple[str, str], float] = {}  # a deleted deployment's series ends
        for unit in controller.units.values():
            key = (unit.namespace, unit.name)
            total = self.totals.get(key, 0.0)
            for live in unit.revisions.values():
                for replica in live.pool.replicas.values():
                    used = cpu_seconds(replica.pid) if replica.pid is not None else None
                    if used is None:
                        continue
                    total += max(0.0, used - self._seen.get(replica.replica_id, 0.0))
                    seen[replica.replica_id] = used
            totals[key] = total
        self.totals, self._seen = totals, seen


class ControllerCollector(Collector):
    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.cpu = CpuAccount()

    def collect(self) -> Iterator[Metric]:
        labels = ["namespace", "deployment"]
        replicas = GaugeMetricFamily("stratus_replicas", "Replicas by state",
                                     labels=[*labels, "state"])
        desired = GaugeMetricFamily("stratus_autoscaler_desired_replicas",
                                    "Replicas the autoscaling policy asks for", labels=labels)
        panic = GaugeMetricFamily("stratus_autoscaler_panic",
                                  "1 while the kpa policy is in panic mode", labels=labels)
        mode = GaugeMetricFamily("stratus_autoscaler_mode",
                                 "1 for the policy and mode the autoscaler is in",
                                 labels=[*labels, "policy", "mode"])
        queued = GaugeMetricFamily("stratus_queue_depth", "Requests held for a replica slot",
                                   labels=labels)
        inflight = GaugeMetricFamily("stratus_inflight_requests",
                                     "Requests in the system (running or queued)", labels=labels)
        memory = GaugeMetricFamily("stratus_memory_bytes",
                                   "Proportional set size of a deployment's replicas", labels=labels)
        sequences = GaugeMetricFamily("stratus_llm_sequences",
                                      "Sequences in the LLM engines of a deployment",
                                      labels=[*labels, "state"])
        kv_tokens = GaugeMetricFamily("stratus_llm_budget_tokens",
                                      "Tokens of the engines' budget held by running sequences",
                                      labels=labels)
        batch_size = HistogramMetricFamily("stratus_batch_size", "Items per batch run by @stratus.batch",
                                           labels=[*labels, "method"])
        weight = GaugeMetricFamily("stratus_traffic_weight",
                                   "Percent of a deployment's traffic a revision gets",
                                   labels=[*labels, "revision"])
        outcomes = CounterMetricFamily(
            "stratus_revision_outcomes", "Finished invocations per live revision; role=shadow "
            "counts the copies a shadow revision served", labels=[*labels, "revision", "role",
                                                                  "outcome"])
        cpu = CounterMetricFamily("stratus_replica_cpu_seconds",
                                  "CPU time used by a deployment's replica processes",
                                  labels=labels)
        resident = GaugeMetricFamily("stratus_replica_resident_memory_bytes",
                                     "Resident set size of a deployment's replicas, summed",
                                     labels=labels)
        self.cpu.update(self.controller)
        for (namespace, name), seconds in self.cpu.totals.items():
            cpu.add_metric([namespace, name], seconds)
        bounds = [*(str(float(bound)) for bound in BUCKETS), "+Inf"]
        for unit in self.controller.units.values():
            key = [unit.namespace, unit.name]
            resident.add_metric(key, sum(
                replica.channel.memory.rss for live in unit.revisions.values()
                for replica in live.pool.replicas.values() if replica.channel is not None))
            for number, share in unit.routing.traffic.items():
                weight.add_metric([*key, str(number)], share)
            for live in unit.revisions.values():
                log = live.pool.outcomes
                role = "shadow" if live.number == unit.routing.shadow else "primary"
                revision = [*key, str(live.number), role]
                outcomes.add_metric([*revision, "ok"], log.total - log.errors)
                outcomes.add_metric([*revision, "error"], log.errors)
            for method, cumulative, total in unit.batch_sizes.series():
                batch_size.add_metric([*key, method], list(zip(bounds, cumulative, strict=True)), total)
            if any(live.runtime.api == "llm" for live in unit.revisions.values()):
                stats = [replica.channel.handler_stats for live in unit.revisions.values()
                         for replica in live.pool.replicas.values() if replica.channel is not None]
                for state in ("running", "waiting"):
                    sequences.add_metric([*key, state], sum(s.get(state, 0.0) for s in stats))
                kv_tokens.add_metric(key, sum(s.get("tokens_budget_used", 0.0) for s in stats))
            for state in STATES:
                count = sum(live.pool.count(state) for live in unit.revisions.values())
                replicas.add_metric([*key, state.value], count)
            desired.add_metric(key, unit.decision.desired)
            panic.add_metric(key, 1.0 if unit.decision.mode == "panic" else 0.0)
            mode.add_metric([*key, unit.scaling.policy, unit.decision.mode], 1.0)
            queued.add_metric(key, sum(len(live.pool.waiters) for live in unit.revisions.values()))
            inflight.add_metric(key, sum(live.pool.load.current for live in unit.revisions.values()))
            memory.add_metric(key, unit.memory_bytes())
        yield from (replicas, desired, panic, mode, queued, inflight, memory, sequences, kv_tokens,
                    batch_size, weight, outcomes, cpu, resident)
        yield from self._copies()

    def _copies(self) -> Iterator[Metric]:
        """Decrypted model and dataset copies: no replica's PSS shows them whole."""
        artifacts = self.controller.models.artifacts
        copies = GaugeMetricFamily("stratus_decrypted_copy_bytes",
                                   "Decrypted blobs held for replicas and jobs (on the data disk, "
                                   "or in /dev/shm with artifacts.plaintext: memory)")
        copies.add_metric([], sum(artifacts.plain.sizes().values()))
        decrypted = CounterMetricFamily("stratus_decrypted_bytes",
                                        "Plaintext bytes decrypted into the plaintext cache")
        decrypted.add_metric([], artifacts.decrypted_bytes)
        seconds = CounterMetricFamily("stratus_decrypt_seconds",
                                      "Time spent decrypting blobs into the plaintext cache")
        seconds.add_metric([], artifacts.decrypt_seconds)
        yield from (copies, decrypted, seconds)


def registry_for(controller: Controller) -> CollectorRegistry:
    """One registry per server, so two servers in one process never collide."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ControllerCollector(controller))
    registry.register(ResilienceCollector(controller))
    ProcessCollector(registry=registry)  # the server's own CPU and memory
    return registry
