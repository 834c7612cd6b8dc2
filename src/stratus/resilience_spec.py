"""The reliability settings of a deployment's scaling spec: outlier ejection, adaptive load
shedding and retries of lost requests (docs/reliability.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class OutliersSpec(BaseModel):
    """Outlier ejection (``resilience/outliers.py``): replicas the picker skips for a while."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    consecutive_failures: int = Field(default=5, ge=1, le=1000)
    interval_s: float = Field(default=10.0, gt=0, le=3600)
    min_requests: int = Field(default=20, ge=1, le=1_000_000)
    ratio_margin: float = Field(default=0.3, gt=0, le=1)
    base_ejection_s: float = Field(default=30.0, gt=0, le=3600)
    max_ejection_s: float = Field(default=300.0, gt=0, le=86400)
    max_ejected_share: float = Field(default=0.5, ge=0, le=1)


class SheddingSpec(BaseModel):
    """Adaptive load shedding (``resilience/concurrency_limit.py``): a learnt limit on the
    requests a revision admits, in front of ``max_queued``. Limits left out: the initial one is
    ``max_replicas`` x ``max_concurrency``, the least ``max_concurrency``."""

    model_config = ConfigDict(extra="forbid")

    adaptive: bool = False
    tolerance: float = Field(default=1.5, ge=1, le=100)
    initial_limit: int | None = Field(default=None, ge=1, le=1_000_000)
    min_limit: int | None = Field(default=None, ge=1, le=1_000_000)
    window_s: float = Field(default=0.25, gt=0, le=60)
RetryOn = Literal["replica_lost", "connect", "timeout"]


class RetrySpec(BaseModel):
    """How a deployment's lost requests are tried again (docs/reliability.md). A request that
    never reached a handler is always safe to send again; one that may have is sent again only
    when ``idempotent`` (or the client gave an Idempotency-Key)."""

    model_config = ConfigDict(extra="forbid")

    attempts: int = Field(default=2, ge=1, le=10,
                          description="attempts in all, the first included; 1 turns retries off")
    on: list[RetryOn] = Field(default=["replica_lost", "connect", "timeout"], max_length=3,
                              description="the failures that are tried again")
    idempotent: bool = Field(default=False, description="the handler may safely run twice")
    budget: float = Field(default=0.2, ge=0, le=1,
                          description="retries as a share of the deployment's requests "
                                      "over the last 10 s")
    min_per_s: float = Field(default=1.0, ge=0, le=1000,
                             description="retries a second allowed beyond the share")
