"""The price sheet and the cost model C(t) = C0 + C1·t + Σ r_i·t_i: what an invocation costs,
what a simulated workload costs, and serverless spend against an always-on deployment.
Pure arithmetic: no I/O, no clock."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MEMORY_STEP_MB = 128  # without a memory limit, the observed peak is billed in 128 MB steps


class Prices(BaseModel):
    """The price sheet: the ``prices:`` section of the server's config file, and what the
    simulator charges. Defaults are AWS Lambda's public x86 prices: $0.20 per million
    requests, $0.0000166667 per GB-second of execution, and $0.0000041667 per GB-second of
    capacity kept warm but idle (Lambda's provisioned-concurrency rate); tokens are free and
    there is no per-second charge."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    currency: str = Field(default="USD", min_length=1, max_length=8)
    per_request: float = Field(default=0.20 / 1_000_000, ge=0, description="C0")
    per_second: float = Field(default=0.0, ge=0, description="C1: per second of duration")
    per_gb_second: float = Field(default=0.0000166667, ge=0,
                                 description="while a replica serves at least one request")
    per_replica_second: float = Field(
        default=0.0000041667, ge=0,
        description="a replica kept up: idle serverless capacity, or an always-on one")
    per_prompt_token: float = Field(default=0.0, ge=0)
    per_completion_token: float = Field(default=0.0, ge=0)
    per_cpu_second: float = Field(default=0.0, ge=0,
                                  description="CPU seconds of a job's workers (GB-seconds too)")

    def rates(self) -> dict[str, float]:
        """r_i, by the name of the resource i each one prices."""
        return {"gb_seconds": self.per_gb_second, "prompt_tokens": self.per_prompt_token,
                "completion_tokens": self.per_completion_token}


def prices_from(section: Mapping[str, Any]) -> Prices:
    """Validate the config file's ``prices:`` section; a bad one is a ValueError naming it."""
    try:
        return Prices.model_validate(dict(section))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors())
        raise ValueError(f"the config file's prices section is invalid: {problems}") from None


def cost(c0: float, c1: float, t: float, rates: Mapping[str, float],
         used: Mapping[str, float]) -> float:
    """C(t) = C0 + C1·t + Σ r_i·t_i: fixed, per second of ``t``, and per unit of each resource
    ``i`` used (``used[i]`` = t_i, priced at ``rates[i]`` = r_i)."""
    unknown = sorted(set(used) - set(rates))
    if unknown:
        raise KeyError(f"no rate for {', '.join(unknown)}")
    return c0 + c1 * t + sum(rates[name] * amount for name, amount in used.items())


def billed_memory_mb(limit_mb: int | None, peak_rss_bytes: int) -> int:
    """The memory an invocation is billed for: the replica's limit when it has one (what it
    reserves), else its observed peak RSS rounded up to the next 128 MB step (at least one)."""
    if limit_mb is not None:
        return limit_mb
    steps = max(1, math.ceil(peak_rss_bytes / (MEMORY_STEP_MB * 2**20)))
    return steps * MEMORY_STEP_MB


def gb_seconds(memory_mb: float, seconds: float) -> float:
    return memory_mb / 1024 * seconds


@dataclass(frozen=True)
class Metered:
    """Sums over a group of usage records."""

    requests: int = 0
    seconds: float = 0.0
    gb_seconds: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def used(self) -> dict[str, float]:
        return {"gb_seconds": self.gb_seconds, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens}


@dataclass(frozen=True)
class Capacity:
    """Replicas kept up over a period, as the sampler saw them."""

    observed_s: float = 0.0  # how long the deployment was watched within the period
    peak_replicas: int = 0  # the most ready replicas at once
    replica_seconds: float = 0.0  # replicas alive (starting, ready or draining), integrated
    busy_replica_seconds: float = 0.0  # of which serving at least one request

    @property
    def idle_replica_seconds(self) -> float:
        return max(0.0, self.replica_seconds - self.busy_replica_seconds)


def metered_cost(prices: Prices, metered: Metered) -> dict[str, float]:
    """The invocations' cost, split by term. C is linear, so the sum over N invocations is
    N·C0 + C1·Σt + Σ_i r_i·Σt_i: the same model applied to the group's totals."""
    terms = {"requests": metered.requests * prices.per_request,
             "duration": prices.per_second * metered.seconds}
    rates = prices.rates()
    for name, amount in metered.used().items():
        terms[name] = rates[name] * amount
    terms["total"] = cost(metered.requests * prices.per_request, prices.per_second,
                          metered.seconds, rates, metered.used())
    return terms


def compare(prices: Prices, metered: Metered, capacities: Sequence[Capacity]) -> dict[str, float]:
    """What was spent serverlessly (invocations plus idle replica-seconds) against always-on
    deployments, each kept at its ``peak_replicas`` for its observed time, which pay for their
    replica-seconds only: requests, duration and tokens cost them nothing more."""
    invocations = metered_cost(prices, metered)["total"]
    rate = prices.per_replica_second
    idle = sum(c.idle_replica_seconds for c in capacities) * rate
    always_on = sum(c.peak_replicas * c.observed_s for c in capacities) * rate
    serverless = invocations + idle
    return {"invocations": invocations, "idle": idle, "serverless": serverless,
            "always_on": always_on, "saved": always_on - serverless}


def job_cost(prices: Prices, gb_seconds: float, cpu_seconds: float) -> dict[str, float]:
    """What jobs cost: their workers' GB-seconds at the invocations' rate, and CPU seconds."""
    terms = {"gb_seconds": prices.per_gb_second * gb_seconds,
             "cpu_seconds": prices.per_cpu_second * cpu_seconds}
    return {**terms, "total": sum(terms.values())}


DEFAULT_PRICES = Prices()
DEFAULT_MEMORY_GB = 1.0  # per simulated replica, when a deployment sets no memory limit


def workload_cost(prices: Prices, requests: int, busy_replica_seconds: float,
                  idle_replica_seconds: float, memory_gb: float | None = None) -> float:
    """What the simulator charges a workload: requests, GB-seconds while a replica serves,
    and GB-seconds of replicas kept up with nothing to do."""
    memory = DEFAULT_MEMORY_GB if memory_gb is None else memory_gb
    return (requests * prices.per_request
            + busy_replica_seconds * memory * prices.per_gb_second
            + idle_replica_seconds * memory * prices.per_replica_second)
