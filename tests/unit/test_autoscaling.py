"""Unit tests for building policies from scaling specs and validating their settings."""

from __future__ import annotations

from typing import Any

import pytest

from stratus.autoscale.build import (
    SETTINGS,
    HistogramSettings,
    KeepAliveSettings,
    KpaSettings,
    build_policy,
    policy_settings,
    validate_scaling,
)
from stratus.autoscale.floors import Schedule, WithFloors
from stratus.autoscale.histogram import HybridHistogramPolicy
from stratus.autoscale.keepalive import FixedKeepAlivePolicy
from stratus.autoscale.kpa import KpaPolicy
from stratus.autoscale.policy import Bounds, ReplicaCounts
from stratus.dispatch.load import MetricSample
from stratus.errors import BadRequest
from stratus.spec import RuntimeSpec, ScalingSpec, target_concurrency


def scaling(**fields: Any) -> ScalingSpec:
    return ScalingSpec(**fields)


def test_every_policy_has_settings() -> None:
    assert set(SETTINGS) == {"kpa", "fixed_keepalive", "hybrid_histogram"}
    assert (SETTINGS["kpa"], SETTINGS["fixed_keepalive"]) == (KpaSettings, KeepAliveSettings)
    assert SETTINGS["hybrid_histogram"] is HistogramSettings


# -- build_policy --------------------------------------------------------------------------------


def test_kpa_is_the_default_and_gets_the_spec_settings() -> None:
    spec = scaling(min_replicas=1, max_replicas=9, initial_replicas=2, scale_to_zero_after_s=30.0,
                   policy_config={"stable_window_s": 120, "panic_window_pct": 5, "panic_threshold": 3,
                                  "max_scale_up_rate": 4, "max_scale_down_rate": 1.5})
    policy = build_policy(spec, 5.6)
    assert isinstance(policy, WithFloors) and policy.name == "kpa"
    inner = policy.inner
    assert isinstance(inner, KpaPolicy)
    config = inner.config
    assert config.bounds == Bounds(1, 9, 5.6)
    assert (config.metric, config.stable_window_s, config.panic_window_s) == ("concurrency", 120.0, 6.0)
    assert (config.panic_threshold, config.max_scale_up_rate, config.max_scale_down_rate) == (3.0, 4.0, 1.5)
    assert (config.initial_replicas, config.scale_to_zero_after_s) == (2, 30.0)
    assert (policy.provisioned, policy.schedules, policy.max_replicas) == (0, [], 9)


def test_kpa_on_rps_targets_target_rps_times_the_utilization() -> None:
    spec = scaling(target_utilization=0.5, policy_config={"metric": "rps", "target_rps": 20})
    inner = build_policy(spec, 5.6).inner
    assert isinstance(inner, KpaPolicy)
    assert inner.config.metric == "rps"
    assert inner.config.bounds.target == pytest.approx(10.0)


def test_fixed_keepalive_gets_its_keepalive() -> None:
    spec = scaling(policy="fixed_keepalive", policy_config={"keepalive_s": 900}, max_replicas=3)
    policy = build_policy(spec, 2.0)
    inner = policy.inner
    assert isinstance(inner, FixedKeepAlivePolicy) and policy.name == "fixed_keepalive"
    assert inner.config.keepalive_s == 900.0
    assert inner.config.bounds == Bounds(0, 3, 2.0)


def test_hybrid_histogram_gets_every_setting() -> None:
    settings = {"bin_s": 30, "range_s": 3600, "head_percentile": 1, "tail_percentile": 95, "margin": 0.2,
                "cv_threshold": 1.5, "oob_threshold": 0.3, "min_samples": 8, "fallback_keepalive_s": 120}
    policy = build_policy(scaling(policy="hybrid_histogram", policy_config=settings), 1.0)
    inner = policy.inner
    assert isinstance(inner, HybridHistogramPolicy) and policy.name == "hybrid_histogram"
    assert {name: getattr(inner.config, name) for name in settings} == settings
    assert len(inner.histogram.counts) == 120


def test_floors_come_from_the_spec() -> None:
    spec = scaling(max_replicas=6, provisioned_replicas=2,
                   schedules=["0 9 * * 1-5 for 9h keep 4",
                              {"cron": "0 20 * * *", "duration_s": 600, "replicas": 1,
                               "timezone": "Europe/Paris"}])
    policy = build_policy(spec, 1.0)
    assert policy.provisioned == 2 and policy.max_replicas == 6
    assert policy.schedules == [Schedule("0 9 * * 1-5", 32_400.0, 4),
                                Schedule("0 20 * * *", 600.0, 1, "Europe/Paris")]


def test_built_policy_scales_on_the_effective_target() -> None:
    spec = scaling(max_replicas=20)
    target = target_concurrency(spec, RuntimeSpec(bundle="a" * 64, entrypoint="app.py:M", max_concurrency=8))
    assert target == pytest.approx(5.6)
    policy = build_policy(spec, target)
    policy.observe(MetricSample(t=1.0, interval_s=0.0, average_concurrency=64.0, peak_concurrency=64,
                                arrivals=0, queued=64))
    assert policy.decide(1.0, ReplicaCounts(0, 0)).desired == 12  # ceil(64 / 5.6)


def test_build_policy_rejects_rps_without_target_rps() -> None:
    with pytest.raises(BadRequest, match=r"needs policy_config\.target_rps"):
        build_policy(scaling(policy_config={"metric": "rps"}), 1.0)


def test_build_policy_rejects_bad_settings() -> None:
    with pytest.raises(BadRequest, match="invalid fixed_keepalive policy_config"):
        build_policy(scaling(policy="fixed_keepalive", policy_config={"stable_window_s": 10}), 1.0)


# -- validate_scaling and policy_settings ----------------------------------------------------------


@pytest.mark.parametrize("policy", sorted(SETTINGS))
def test_defaults_are_valid(policy: str) -> None:
    validate_scaling(scaling(policy=policy))
    build_policy(scaling(policy=policy), 1.0)


def test_unknown_policy() -> None:
    with pytest.raises(BadRequest, match=r"unknown policy 'idle_timeout'; choose one of "
                                         r"\['fixed_keepalive', 'hybrid_histogram', 'kpa'\]") as caught:
        validate_scaling(ScalingSpec.model_construct(policy="idle_timeout", policy_config={}))
    assert caught.value.status == 400
    with pytest.raises(BadRequest, match="unknown policy"):
        policy_settings("", {})


@pytest.mark.parametrize(
    ("policy", "config", "problem"),
    [
        ("kpa", {"stable_window": 60}, "stable_window: Extra inputs are not permitted"),
        ("kpa", {"keepalive_s": 60}, "keepalive_s: Extra inputs are not permitted"),
        ("fixed_keepalive", {"keepalive": 60}, "keepalive: Extra inputs are not permitted"),
        ("fixed_keepalive", {"metric": "rps"}, "metric: Extra inputs are not permitted"),
        ("hybrid_histogram", {"bins": 240}, "bins: Extra inputs are not permitted"),
        ("hybrid_histogram", {"keepalive_s": 60}, "keepalive_s: Extra inputs are not permitted"),
    ],
)
def test_unknown_keys_are_rejected(policy: str, config: dict[str, Any], problem: str) -> None:
    with pytest.raises(BadRequest, match=f"invalid {policy} policy_config: {problem}"):
        validate_scaling(scaling(policy=policy, policy_config=config))


@pytest.mark.parametrize(
    ("policy", "config"),
    [
        ("kpa", {"metric": "latency"}),
        ("kpa", {"target_rps": 0}),
        ("kpa", {"stable_window_s": 0}),
        ("kpa", {"stable_window_s": 3601}),
        ("kpa", {"panic_window_pct": 0}),
        ("kpa", {"panic_window_pct": 101}),
        ("kpa", {"panic_threshold": 0.5}),
        ("kpa", {"max_scale_up_rate": 1}),
        ("kpa", {"max_scale_down_rate": 0.5}),
        ("fixed_keepalive", {"keepalive_s": -1}),
        ("fixed_keepalive", {"keepalive_s": "ten minutes"}),
        ("hybrid_histogram", {"bin_s": 0}),
        ("hybrid_histogram", {"head_percentile": 101}),
        ("hybrid_histogram", {"margin": 1}),
        ("hybrid_histogram", {"oob_threshold": 0}),
        ("hybrid_histogram", {"min_samples": 0}),
    ],
)
def test_out_of_range_settings_are_rejected(policy: str, config: dict[str, Any]) -> None:
    (name,) = config
    with pytest.raises(BadRequest, match=f"invalid {policy} policy_config: {name}: "):
        validate_scaling(scaling(policy=policy, policy_config=config))


def test_several_problems_are_reported_together() -> None:
    with pytest.raises(BadRequest) as caught:
        validate_scaling(scaling(policy_config={"stable_window_s": 0, "surprise": 1}))
    assert "stable_window_s: " in str(caught.value) and "surprise: " in str(caught.value)


def test_rps_needs_target_rps() -> None:
    with pytest.raises(BadRequest, match=r"kpa on the rps metric needs policy_config\.target_rps"):
        validate_scaling(scaling(policy_config={"metric": "rps"}))
    validate_scaling(scaling(policy_config={"metric": "rps", "target_rps": 5}))
    validate_scaling(scaling(policy_config={"target_rps": 5}))  # unused on concurrency, but harmless


def test_policy_settings_returns_the_validated_model() -> None:
    settings = policy_settings("fixed_keepalive", {"keepalive_s": "90"})
    assert settings == KeepAliveSettings(keepalive_s=90.0)
