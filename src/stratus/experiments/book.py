"""Experiments: a deployment's revisions compared as named variants on requests, errors,
latency and conversions. The book counts outcomes on the request path and saves them often."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from stratus.control.controller import Controller
from stratus.dispatch.outcomes import Outcome, percentile
from stratus.dispatch.traffic import TrafficSplit
from stratus.errors import BadRequest, Conflict, NotFound
from stratus.experiments.assignment import Experiment, credited_variant
from stratus.experiments.statistics import DEFAULT_ALPHA, compare_conversion, compare_latency
from stratus.spec import NAME_PATTERN, StickySpec, TrafficUpdate
from stratus.store.experiments import ExperimentRecord, ExperimentStore

log = logging.getLogger("stratus.experiments")

FLUSH_S = 5.0  # how often request statistics are saved
VARIANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
_VARIANT = re.compile(VARIANT_PATTERN)


class ExperimentRequest(BaseModel):
    """Body of ``POST /api/experiments``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    deployment: str = Field(pattern=NAME_PATTERN)
    variants: dict[str, int] = Field(min_length=2, max_length=16,
                                     description="variant name -> revision of the deployment")
    control: str | None = Field(default=None, description="default: the first variant")
    traffic: dict[str, int] | None = Field(
        default=None, description="variant -> whole percent, summing to 100; sets the "
                                  "deployment's traffic split")
    sticky: StickySpec | None = Field(default=None, description="sets the sticky A/B key")
    alpha: float = Field(default=DEFAULT_ALPHA, gt=0, lt=0.5, description="significance level")

    @model_validator(mode="after")
    def _check(self) -> ExperimentRequest:
        for variant, revision in self.variants.items():
            if not _VARIANT.match(variant):
                raise ValueError(f"variant name {variant!r} must match {VARIANT_PATTERN}")
            if revision < 1:
                raise ValueError(f"variant {variant!r}: revisions start at 1, not {revision}")
        if len(set(self.variants.values())) != len(self.variants):
            raise ValueError("each variant needs a revision of its own")
        if self.control is not None and self.control not in self.variants:
            raise ValueError(f"control {self.control!r} is not one of the variants")
        unknown = sorted(set(self.traffic or {}) - set(self.variants))
        if unknown:
            raise ValueError(f"traffic names unknown variants: {', '.join(unknown)}")
        return self


class ConversionEvent(BaseModel):
    """One conversion (or ``count`` of them), credited to a variant named directly, by its
    revision, or by the sticky key that the deployment's split assigns to it."""

    model_config = ConfigDict(extra="forbid")

    variant: str | None = Field(default=None, min_length=1, max_length=63)
    revision: int | None = Field(default=None, ge=1)
    key: str | None = Field(default=None, min_length=1, max_length=512)
    count: int = Field(default=1, ge=1, le=10_000)

    @model_validator(mode="after")
    def _one_target(self) -> ConversionEvent:
        if sum(value is not None for value in (self.variant, self.revision, self.key)) != 1:
            raise ValueError("an event names exactly one of 'variant', 'revision' or 'key'")
        return self


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[ConversionEvent] = Field(min_length=1, max_length=1000)


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _ms(values: Sequence[float], q: float) -> float | None:
    found = percentile(list(values), q)
    return round(found, 3) if found is not None else None


def report(experiment: Experiment) -> dict[str, Any]:
    """The public view of ``GET /api/experiments/{name}``: each variant's numbers and, for
    each but the control, its comparison against the control."""
    record = experiment.record
    control = record.control
    base, base_conversions = experiment.stats[control], experiment.conversions[control]
    variants = []
    for name, revision in record.variants:
        stats, conversions = experiment.stats[name], experiment.conversions[name]
        comparison = None
        if name != control:
            conversion = compare_conversion(control, name, (base_conversions, base.requests),
                                            (conversions, stats.requests), record.alpha)
            latency = compare_latency(control, name, base.latencies_ms, stats.latencies_ms,
                                      record.alpha)
            comparison = {"conversion": conversion.view("z"), "latency": latency.view("t")}
        variants.append({
            "name": name,
            "revision": revision,
            "requests": stats.requests,
            "errors": stats.errors,
            "error_ratio": _ratio(stats.errors, stats.requests),
            "p50_ms": _ms(stats.latencies_ms, 50),
            "p95_ms": _ms(stats.latencies_ms, 95),
            "conversions": conversions,
            "conversion_rate": _ratio(conversions, stats.requests),
            "comparison": comparison,
        })
    return {
        "name": record.name,
        "deployment": record.deployment,
        "created_at": record.created_at.isoformat(),
        "control": control,
        "alpha": record.alpha,
        "traffic": record.traffic,
        "sticky": record.sticky,
        "variants": variants,
    }


class ExperimentBook:
    """Every experiment of every namespace, indexed by deployment for the request path."""

    def __init__(self, store: ExperimentStore, controller: Controller,
                 flush_s: float = FLUSH_S) -> None:
        self.store = store
        self.controller = controller
        self.flush_s = flush_s
        self._experiments: dict[tuple[str, str], Experiment] = {}
        self._watching: dict[tuple[str, str], list[Experiment]] = {}
        self._rng = random.Random()
        self._lock = asyncio.Lock()  # one change at a time, each saved before the next
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        for record in await asyncio.to_thread(self.store.list_all):
            self._add(Experiment.of(record))
        self._task = asyncio.create_task(self._flush_loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    # -- the request path --------------------------------------------------------
    def observe(self, outcome: Outcome) -> None:
        """A dispatcher listener: O(1) for deployments no experiment watches."""
        if outcome.shadow:
            return
        watching = self._watching.get((outcome.namespace, outcome.deployment))
        if not watching:
            return
        for experiment in watching:
            stats = experiment.by_revision.get(outcome.revision)
            if stats is not None and outcome.at >= experiment.since:
                stats.add(outcome.ok, outcome.latency_s, self._rng)
                experiment.dirty = True

    # -- operations --------------------------------------------------------------
    def get(self, namespace: str, name: str) -> Experiment:
        experiment = self._experiments.get((namespace, name))
        if experiment is None:
            raise NotFound(f"experiment {name!r} not found")
        return experiment

    def in_namespace(self, namespace: str) -> list[Experiment]:
        return sorted((e for e in self._experiments.values() if e.record.namespace == namespace),
                      key=lambda e: e.record.name)

    async def create(self, namespace: str, request: ExperimentRequest) -> Experiment:
        async with self._lock:
            if (namespace, request.name) in self._experiments:
                raise Conflict(f"experiment {request.name!r} already exists")
            self.controller.get_unit(namespace, request.deployment)
            known = {revision.number for revision in await asyncio.to_thread(
                self.controller.store.list_revisions, namespace, request.deployment)}
            for variant, revision in request.variants.items():
                if revision not in known:
                    raise BadRequest(f"variant {variant!r}: deployment {request.deployment!r} "
                                     f"has no revision {revision}")
            # Only the fields given: a field passed as None would mean "clear it".
            changes: dict[str, Any] = {}
            if request.traffic is not None:
                changes["traffic"] = {request.variants[v]: w for v, w in request.traffic.items()}
            if request.sticky is not None:
                changes["sticky"] = request.sticky
            if changes:
                await self.controller.set_traffic(namespace, request.deployment,
                                                  TrafficUpdate(**changes))
            record = ExperimentRecord(
                namespace=namespace, name=request.name, deployment=request.deployment,
                variants=tuple(request.variants.items()),
                control=request.control or next(iter(request.variants)), alpha=request.alpha,
                traffic=request.traffic,
                sticky=request.sticky.model_dump(exclude_none=True) if request.sticky else None,
                created_at=datetime.now(UTC),
            )
            await asyncio.to_thread(self.store.create, record)
            experiment = Experiment.of(record)
            self._add(experiment)
            return experiment

    async def delete(self, namespace: str, name: str) -> None:
        async with self._lock:
            experiment = self.get(namespace, name)
            await asyncio.to_thread(self.store.delete, namespace, name)
            self._remove(experiment)

    async def convert(self, namespace: str, name: str, events: list[ConversionEvent]) -> int:
        """Record conversion events, all or none; returns how many conversions they add."""
        async with self._lock:
            experiment = self.get(namespace, name)
            credited = [(self._variant_of(experiment, event), event.count) for event in events]
            updated = dict(experiment.conversions)
            for variant, count in credited:
                updated[variant] += count
            # Saved under the lock, so a later count never lands before an earlier one.
            await asyncio.to_thread(self.store.save_conversions, namespace, name, updated)
            experiment.conversions = updated
            return sum(count for _, count in credited)

    def _variant_of(self, experiment: Experiment, event: ConversionEvent) -> str:
        key = event.key
        revision = event.revision if key is None else self._assigned(experiment.record, key)
        return credited_variant(experiment, event.variant, revision, key)

    def _assigned(self, record: ExperimentRecord, key: str) -> int:
        """The revision the deployment's current split gives a sticky key."""
        try:
            unit = self.controller.get_unit(record.namespace, record.deployment)
        except NotFound:
            raise BadRequest(f"cannot place key {key!r}: deployment {record.deployment!r} "
                             "no longer exists") from None
        if not unit.traffic:
            raise BadRequest(f"cannot place key {key!r}: deployment {record.deployment!r} "
                             "has no traffic split")
        return TrafficSplit.of(unit.traffic).pick_sticky(key)

    # -- bookkeeping -------------------------------------------------------------
    def _add(self, experiment: Experiment) -> None:
        record = experiment.record
        self._experiments[experiment.key] = experiment
        self._watching.setdefault((record.namespace, record.deployment), []).append(experiment)

    def _remove(self, experiment: Experiment) -> None:
        record = experiment.record
        self._experiments.pop(experiment.key, None)
        watched = (record.namespace, record.deployment)
        remaining = [e for e in self._watching.get(watched, []) if e is not experiment]
        if remaining:
            self._watching[watched] = remaining
        else:
            self._watching.pop(watched, None)

    async def flush(self) -> None:
        """Save the request statistics of the experiments that counted something new."""
        snapshots = []
        for experiment in self._experiments.values():
            if experiment.dirty:
                experiment.dirty = False
                record = experiment.record
                snapshots.append((record.namespace, record.name,
                                  {name: s.snapshot() for name, s in experiment.stats.items()}))
        if not snapshots:
            return
        try:
            await asyncio.to_thread(self.store.save_stats, snapshots)
        except Exception:
            log.exception("saving experiment statistics failed; will retry")
            for namespace, name, _ in snapshots:
                found = self._experiments.get((namespace, name))
                if found is not None:
                    found.dirty = True

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            await self.flush()
