"""Builds a deployment's policy from its scaling spec: the one place, shared by the live
controller and the simulator, that turns settings into policy objects."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stratus.autoscale.floors import Schedule, WithFloors
from stratus.autoscale.histogram import HistogramConfig, HybridHistogramPolicy
from stratus.autoscale.keepalive import FixedKeepAlivePolicy, KeepAliveConfig
from stratus.autoscale.kpa import KpaConfig, KpaPolicy
from stratus.autoscale.policy import Bounds, ScalingPolicy
from stratus.errors import BadRequest
from stratus.spec import ScalingSpec


class KpaSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metric: Literal["concurrency", "rps"] = "concurrency"
    target_rps: float | None = Field(default=None, gt=0)  # per replica, with metric "rps"
    stable_window_s: float = Field(default=60.0, gt=0, le=3600)
    panic_window_pct: float = Field(default=10.0, gt=0, le=100)
    panic_threshold: float = Field(default=2.0, ge=1)
    max_scale_up_rate: float = Field(default=1000.0, gt=1)
    max_scale_down_rate: float = Field(default=2.0, ge=1)


class KeepAliveSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keepalive_s: float = Field(default=600.0, ge=0, le=7 * 86400)


class HistogramSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bin_s: float = Field(default=60.0, gt=0)
    range_s: float = Field(default=4 * 3600.0, gt=0)
    head_percentile: float = Field(default=5.0, ge=0, le=100)
    tail_percentile: float = Field(default=99.0, ge=0, le=100)
    margin: float = Field(default=0.10, ge=0, lt=1)
    cv_threshold: float = Field(default=2.0, ge=0)
    oob_threshold: float = Field(default=0.5, gt=0, le=1)
    min_samples: int = Field(default=5, ge=1)
    fallback_keepalive_s: float = Field(default=600.0, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> HistogramSettings:
        if self.head_percentile > self.tail_percentile:
            raise ValueError("head_percentile must not exceed tail_percentile")
        if self.bin_s > self.range_s:
            raise ValueError("bin_s must not exceed range_s")
        return self


SETTINGS: dict[str, type[BaseModel]] = {
    "kpa": KpaSettings,
    "fixed_keepalive": KeepAliveSettings,
    "hybrid_histogram": HistogramSettings,
}


def policy_settings(policy: str, config: dict[str, Any]) -> BaseModel:
    model = SETTINGS.get(policy)
    if model is None:
        raise BadRequest(f"unknown policy {policy!r}; choose one of {sorted(SETTINGS)}")
    try:
        return model.model_validate(config)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise BadRequest(f"invalid {policy} policy_config: {problems}") from None


def validate_scaling(scaling: ScalingSpec) -> None:
    settings = policy_settings(scaling.policy, scaling.policy_config)
    if isinstance(settings, KpaSettings) and settings.metric == "rps" and not settings.target_rps:
        raise BadRequest("kpa on the rps metric needs policy_config.target_rps")


def build_policy(scaling: ScalingSpec, target_concurrency: float) -> ScalingPolicy:
    """``target_concurrency`` is the effective per-replica target (after utilization)."""
    settings = policy_settings(scaling.policy, scaling.policy_config)
    bounds = Bounds(scaling.min_replicas, scaling.max_replicas, target_concurrency)
    inner: ScalingPolicy
    if isinstance(settings, KpaSettings):
        if settings.metric == "rps":
            if not settings.target_rps:
                raise BadRequest("kpa on the rps metric needs policy_config.target_rps")
            bounds = Bounds(bounds.min_replicas, bounds.max_replicas,
                            settings.target_rps * scaling.target_utilization)
        inner = KpaPolicy(KpaConfig(
            bounds=bounds, metric=settings.metric, stable_window_s=settings.stable_window_s,
            panic_window_pct=settings.panic_window_pct, panic_threshold=settings.panic_threshold,
            max_scale_up_rate=settings.max_scale_up_rate,
            max_scale_down_rate=settings.max_scale_down_rate,
            initial_replicas=scaling.initial_replicas,
            scale_to_zero_after_s=scaling.scale_to_zero_after_s,
        ))
    elif isinstance(settings, KeepAliveSettings):
        inner = FixedKeepAlivePolicy(KeepAliveConfig(bounds, settings.keepalive_s))
    else:
        assert isinstance(settings, HistogramSettings)
        inner = HybridHistogramPolicy(HistogramConfig(bounds=bounds, **settings.model_dump()))
    schedules = [Schedule.of(spec) for spec in scaling.schedules]
    return WithFloors(inner, scaling.provisioned_replicas, schedules, scaling.max_replicas)
