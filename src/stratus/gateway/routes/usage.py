"""``GET /api/usage``: what the caller's namespace spent, by group, against always-on capacity;
``GET /api/usage/records``: the usage records themselves."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Query, Request

from stratus.cost import Capacity, Metered, Prices, compare, job_cost, metered_cost
from stratus.errors import BadRequest, Unavailable
from stratus.gateway.authz import needs
from stratus.gateway.state import Parts, namespace_of
from stratus.observe.logs import parse_since
from stratus.observe.usage import UsageMeter
from stratus.security.roles import Permission
from stratus.store.job_usage import JobUsageTotals
from stratus.store.usage import GROUPINGS, GroupUsage

router = APIRouter(prefix="/api/usage", tags=["usage"])
SINCE_HELP = "a duration ago (90s, 10m, 2h, 7d) or an ISO 8601 time"


def _period(since: str) -> tuple[float, float]:
    until = time.time()
    try:
        start = parse_since(since, until)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    if not math.isfinite(start) or start >= until:
        raise BadRequest(f"since must be a time in the past, not {since!r}")
    return start, until


def _meter(parts: Parts) -> UsageMeter:
    if parts.usage is None:
        raise Unavailable("usage metering is not running yet")
    return parts.usage


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat()


def _sums(metered: Metered, capacities: Sequence[Capacity]) -> dict[str, Any]:
    return {
        "requests": metered.requests, "duration_s": metered.seconds,
        "gb_seconds": metered.gb_seconds, "prompt_tokens": metered.prompt_tokens,
        "completion_tokens": metered.completion_tokens,
        "peak_replicas": sum(c.peak_replicas for c in capacities),
        "observed_s": max((c.observed_s for c in capacities), default=0.0),
        "replica_seconds": sum(c.replica_seconds for c in capacities),
        "idle_replica_seconds": sum(c.idle_replica_seconds for c in capacities),
    }


def _costs(prices: Prices, metered: Metered, capacities: Sequence[Capacity]) -> dict[str, float]:
    """The terms of C(t) summed over the group's invocations, then the comparison."""
    terms = metered_cost(prices, metered)
    del terms["total"]
    return {**terms, **compare(prices, metered, capacities)}


def _group(by: str, group: GroupUsage, prices: Prices) -> dict[str, Any]:
    named = dict(zip(GROUPINGS, group.key, strict=False))
    return {**named, **_sums(group.metered, group.capacities), "cold_starts": group.cold_starts,
            "errors": group.errors, "shadow_requests": group.shadow_requests,
            "cost": _costs(prices, group.metered, group.capacities)}


def _total(groups: list[GroupUsage], prices: Prices) -> dict[str, Any]:
    metered = Metered(sum(g.metered.requests for g in groups),
                      sum(g.metered.seconds for g in groups),
                      sum(g.metered.gb_seconds for g in groups),
                      sum(g.metered.prompt_tokens for g in groups),
                      sum(g.metered.completion_tokens for g in groups))
    capacities = [c for g in groups for c in g.capacities]
    return {**_sums(metered, capacities), "cold_starts": sum(g.cold_starts for g in groups),
            "errors": sum(g.errors for g in groups), "cost": _costs(prices, metered, capacities)}


def _jobs(totals: JobUsageTotals, prices: Prices) -> dict[str, Any]:
    return {"jobs": totals.jobs, "runs": totals.runs, "duration_s": totals.duration_s,
            "cpu_seconds": totals.cpu_seconds, "gb_seconds": totals.gb_seconds,
            "cost": job_cost(prices, totals.gb_seconds, totals.cpu_seconds)}


@router.get("",
            dependencies=[needs(Permission.READ)],
            summary="Usage and cost by group, against an always-on deployment")
async def usage_report(
    request: Request,
    parts: Parts,
    since: str = Query("24h", description=SINCE_HELP),
    by: str = Query("deployment", description="namespace, deployment or revision"),
) -> dict[str, Any]:
    """Costs follow C(t) = C0 + C1·t + Σ r_i·t_i per invocation with the server's price sheet;
    ``serverless`` adds the idle replica-seconds, ``always_on`` prices each deployment's peak
    ready replicas for as long as it was observed in the period. ``jobs`` sums the job runs
    that started in the period: their GB-seconds and CPU seconds, priced apart."""
    if by not in GROUPINGS:
        raise BadRequest(f"by must be one of {', '.join(GROUPINGS)}, not {by!r}")
    start, until = _period(since)
    meter = _meter(parts)
    await meter.flush()  # what the buffer holds counts too
    groups = await asyncio.to_thread(meter.store.report, namespace_of(request), start, until, by)
    prices = meter.prices
    jobs = parts.jobs.usage if parts.jobs is not None else None
    job_totals = JobUsageTotals() if jobs is None else await asyncio.to_thread(
        jobs.totals, namespace_of(request), start, until)
    return {
        "namespace": namespace_of(request), "by": by, "since": _iso(start), "until": _iso(until),
        "period_s": until - start, "currency": prices.currency,
        "prices": prices.model_dump(exclude={"currency"}),
        "groups": [_group(by, group, prices) for group in groups],
        "total": _total(groups, prices),
        "jobs": _jobs(job_totals, prices),  # training and evaluation jobs: their own line
    }


@router.get("/records", dependencies=[needs(Permission.READ)], summary="Usage records, newest first")
async def usage_records(
    request: Request,
    parts: Parts,
    since: str = Query("1h", description=SINCE_HELP),
    deployment: str | None = Query(None),
    limit: int = Query(100, ge=1, le=10_000),
) -> dict[str, Any]:
    start, until = _period(since)
    meter = _meter(parts)
    await meter.flush()
    found = await asyncio.to_thread(meter.store.records, namespace_of(request), start, until,
                                    deployment, limit)
    return {"records": [record._asdict() for record in found]}
