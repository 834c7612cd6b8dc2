"""Experiment variants and what is credited to them: each variant's requests, errors and
sampled latencies, and the variant a conversion event names, directly, by revision, or by the
sticky key the deployment's split assigns. Pure: no I/O."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from stratus.errors import BadRequest
from stratus.store.experiments import ExperimentRecord

RESERVOIR = 10_000  # latencies kept per variant: a uniform sample of all since the start


class VariantStats:
    """Requests, server errors, and a uniform reservoir sample of successful requests'
    latencies (Vitter's algorithm R), so memory stays bounded however long it runs."""

    __slots__ = ("errors", "latencies_ms", "requests", "seen")

    def __init__(self, requests: int = 0, errors: int = 0, seen: int = 0,
                 latencies_ms: list[float] | None = None) -> None:
        self.requests = requests
        self.errors = errors
        self.seen = seen  # successful requests, each of which had its chance in the sample
        self.latencies_ms = latencies_ms if latencies_ms is not None else []

    def add(self, ok: bool, latency_s: float, rng: random.Random) -> None:
        self.requests += 1
        if not ok:
            # A failure's latency (often a timeout) says how it failed, not how fast it serves.
            self.errors += 1
            return
        self.seen += 1
        latency = round(latency_s * 1000, 3)
        if len(self.latencies_ms) < RESERVOIR:
            self.latencies_ms.append(latency)
        else:
            slot = rng.randrange(self.seen)
            if slot < RESERVOIR:
                self.latencies_ms[slot] = latency

    def snapshot(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors, "seen": self.seen,
                "latencies_ms": list(self.latencies_ms)}

    @classmethod
    def restore(cls, data: dict[str, Any]) -> VariantStats:
        return cls(int(data.get("requests", 0)), int(data.get("errors", 0)),
                   int(data.get("seen", 0)), [float(v) for v in data.get("latencies_ms", [])])


@dataclass
class Experiment:
    record: ExperimentRecord
    stats: dict[str, VariantStats]
    by_revision: dict[int, VariantStats]
    conversions: dict[str, int]
    since: float  # Unix time of creation: earlier outcomes are not the experiment's
    dirty: bool = False

    @classmethod
    def of(cls, record: ExperimentRecord) -> Experiment:
        stats = {name: VariantStats.restore(record.stats.get(name, {}))
                 for name, _ in record.variants}
        return cls(record, stats, {revision: stats[name] for name, revision in record.variants},
                   {name: int(record.conversions.get(name, 0)) for name, _ in record.variants},
                   record.created_at.timestamp())

    @property
    def key(self) -> tuple[str, str]:
        return (self.record.namespace, self.record.name)

    def summary(self) -> dict[str, Any]:
        record = self.record
        return {
            "name": record.name,
            "deployment": record.deployment,
            "control": record.control,
            "variants": dict(record.variants),
            "requests": sum(stats.requests for stats in self.stats.values()),
            "conversions": sum(self.conversions.values()),
            "created_at": record.created_at.isoformat(),
        }


def credited_variant(experiment: Experiment, variant: str | None, revision: int | None,
                     key: str | None) -> str:
    """The variant a conversion goes to: the one it names, else the one of its revision (given,
    or the revision its sticky ``key`` is assigned to)."""
    record = experiment.record
    if variant is not None:
        if variant not in experiment.stats:
            raise BadRequest(f"experiment {record.name!r} has no variant {variant!r}; "
                             f"it has {', '.join(experiment.stats)}")
        return variant
    for name, number in record.variants:
        if number == revision:
            return name
    via = f"key {key!r} is assigned to revision" if key else "revision"
    raise BadRequest(f"{via} {revision}, which is no variant of experiment {record.name!r}")
