"""Prometheus metrics of the reliability policies, read at scrape time: replicas ejected as
outliers, each revision's start-up circuit, its adaptive concurrency limit and what it shed."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stratus.control.controller import Controller
from stratus.control.resilience_view import circuit_state
from stratus.resilience.circuit import CircuitState


class ResilienceCollector(Collector):
    def __init__(self, controller: Controller) -> None:
        self.controller = controller

    def collect(self) -> Iterator[Metric]:
        labels = ["namespace", "deployment", "revision"]
        ejected = GaugeMetricFamily("stratus_ejected_replicas",
                                    "Replicas the picker skips as outliers (open or half-open)",
                                    labels=labels)
        ejections = CounterMetricFamily("stratus_replica_ejections",
                                        "Outlier ejections, re-ejections after a failed probe "
                                        "included", labels=labels)
        circuit = GaugeMetricFamily("stratus_circuit_state",
                                    "1 for the state of a revision's start-up circuit",
                                    labels=[*labels, "state"])
        limit = GaugeMetricFamily("stratus_concurrency_limit",
                                  "Requests a revision admits at once (adaptive shedding)",
                                  labels=labels)
        shed = CounterMetricFamily("stratus_shed_requests",
                                   "Requests refused at the adaptive concurrency limit",
                                   labels=[*labels, "priority"])
        now = time.monotonic()
        for unit in self.controller.units.values():
            for live in unit.revisions.values():
                pool = live.pool
                key = [unit.namespace, unit.name, str(live.number)]
                state = circuit_state(pool, now)
                for each in CircuitState:
                    circuit.add_metric([*key, each.value], 1.0 if each is state else 0.0)
                if pool.ejection is not None:
                    ejected.add_metric(key, pool.ejection.detector.ejected)
                    ejections.add_metric(key, pool.ejection.detector.ejections_total)
                if pool.admission is not None:
                    limit.add_metric(key, math.floor(pool.admission.limit.limit))
                    for priority, count in pool.admission.shed.items():
                        shed.add_metric([*key, priority.name.lower()], count)
        yield from (ejected, ejections, circuit, limit, shed)
