"""What a client asks of a deployment's traffic: the split, the shadow, the sticky key, and
how a rollout proceeds."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class StickySpec(BaseModel):
    """Where a request's sticky A/B key comes from: a request header or a top-level JSON field."""

    model_config = ConfigDict(extra="forbid")

    header: str | None = Field(default=None, min_length=1, max_length=128,
                               pattern=r"^[A-Za-z0-9_-]+$")
    field: str | None = Field(default=None, min_length=1, max_length=128)

    @model_validator(mode="after")
    def _one_source(self) -> StickySpec:
        if (self.header is None) == (self.field is None):
            raise ValueError("a sticky key comes from exactly one of 'header' or 'field'")
        if self.header is not None:
            self.header = self.header.lower()
        return self


class TrafficUpdate(BaseModel):
    """Body of ``PUT /api/deployments/{name}/traffic``: fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    traffic: dict[int, int] | None = Field(
        default=None, description="revision -> whole percent; they sum to 100. A revision at 0 "
                                  "gets no share but stays reachable by x-stratus-revision")
    shadow: int | None = Field(default=None, ge=1, description="gets a copy of every request")
    sticky: StickySpec | None = None


class RolloutThresholdsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    error_ratio_relative: float = Field(default=0.10, ge=0, le=100)
    min_errors: int = Field(default=5, ge=1, le=1_000_000)
    p95_relative: float = Field(default=0.50, ge=0, le=100)
    p95_min_delta_ms: float = Field(default=20.0, ge=0, le=3_600_000)
    min_requests: int = Field(default=20, ge=1, le=1_000_000)


class RolloutSteps(BaseModel):
    """Without ``canary`` traffic switches at once (blue-green) once the new revision is warm;
    with it, it steps through ``canary_plan(canary, step)``, judged at every step."""

    model_config = ConfigDict(extra="forbid")

    canary: int | None = Field(default=None, ge=1, le=100)
    step: int = Field(default=25, ge=1, le=100)
    interval_s: float = Field(default=60.0, gt=0, le=86400)
    window_s: float | None = Field(default=None, gt=0, le=86400,
                                   description="how far back the judge looks; default interval_s")
    thresholds: RolloutThresholdsSpec = RolloutThresholdsSpec()


class RolloutRequest(RolloutSteps):
    """Body of ``POST /api/deployments/{name}/rollout``."""

    to: int = Field(ge=1, description="the revision to roll out")


class RolloutStrategy(RolloutSteps):
    """How a deploy that records a new revision rolls it out."""

    promote: bool = Field(default=True, description="false: record the revision, but send it "
                                                    "no traffic until told to")
