"""Unit tests for deployment specs: precedence, schedules, code keys, digests and targets."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from stratus.autoscale.floors import Schedule
from stratus.control.resolve import resolve_runtime, resolve_scaling
from stratus.sdk.options import DeploymentOptions
from stratus.spec import (
    CodeRef,
    DeploymentPatch,
    DeploymentRequest,
    RolloutRequest,
    RolloutSteps,
    RolloutStrategy,
    RuntimeFields,
    RuntimeSpec,
    ScalingFields,
    ScalingSpec,
    ScheduleSpec,
    target_concurrency,
)

BUNDLE = "a" * 64
OTHER_BUNDLE = "b" * 64
CODE = CodeRef(bundle=BUNDLE, entrypoint="app.py:Model")


def runtime(**fields: Any) -> RuntimeSpec:
    return RuntimeSpec(**{"bundle": BUNDLE, "entrypoint": "app.py:Model", **fields})


# -- resolve_runtime -------------------------------------------------------------


def test_runtime_defaults() -> None:
    spec = resolve_runtime(RuntimeFields(), CODE, DeploymentOptions())
    assert spec == RuntimeSpec(
        bundle=BUNDLE, entrypoint="app.py:Model", preload=[], env={}, config={},
        max_concurrency=8, timeout_s=60.0, memory_mb=None, threads=1,
    )


def test_decorator_options_override_defaults() -> None:
    options = DeploymentOptions(max_concurrency=16, timeout_s=5.0, memory_mb=512, threads=2,
                                config={"k": "decorator"})
    spec = resolve_runtime(RuntimeFields(), CODE, options)
    assert (spec.max_concurrency, spec.timeout_s, spec.memory_mb, spec.threads) == (16, 5.0, 512, 2)
    assert spec.config == {"k": "decorator"}


def test_request_overrides_decorator_options() -> None:
    options = DeploymentOptions(max_concurrency=16, timeout_s=5.0, memory_mb=512, threads=2,
                                config={"k": "decorator"})
    fields = RuntimeFields(max_concurrency=3, timeout_s=1.5, memory_mb=64, threads=4,
                           config={"k": "request"}, env={"A": "1"}, preload=["torch"])
    spec = resolve_runtime(fields, CODE, options)
    assert (spec.max_concurrency, spec.timeout_s, spec.memory_mb, spec.threads) == (3, 1.5, 64, 4)
    assert spec.config == {"k": "request"}
    assert spec.env == {"A": "1"}
    assert spec.preload == ["torch"]


def test_each_runtime_field_falls_back_independently() -> None:
    options = DeploymentOptions(timeout_s=5.0, threads=2)
    spec = resolve_runtime(RuntimeFields(max_concurrency=3), CODE, options)
    assert (spec.max_concurrency, spec.timeout_s, spec.threads, spec.memory_mb) == (3, 5.0, 2, None)


def test_explicit_empty_config_in_the_request_wins_over_the_decorator() -> None:
    options = DeploymentOptions(config={"k": "decorator"})
    assert resolve_runtime(RuntimeFields(config={}), CODE, options).config == {}
    assert resolve_runtime(RuntimeFields(), CODE, options).config == {"k": "decorator"}


def test_code_always_comes_from_the_code_ref_even_with_a_base() -> None:
    base = runtime(max_concurrency=2, env={"OLD": "1"})
    code = CodeRef(bundle=OTHER_BUNDLE, entrypoint="serve.py:handler")
    spec = resolve_runtime(RuntimeFields(), code, DeploymentOptions(), base)
    assert (spec.bundle, spec.entrypoint) == (OTHER_BUNDLE, "serve.py:handler")
    assert spec.max_concurrency == 2
    assert spec.env == {"OLD": "1"}


def test_base_is_used_below_options_and_request() -> None:
    base = runtime(max_concurrency=2, timeout_s=9.0, threads=3, config={"k": "base"})
    options = DeploymentOptions(timeout_s=4.0)
    spec = resolve_runtime(RuntimeFields(threads=5), CODE, options, base)
    assert (spec.max_concurrency, spec.timeout_s, spec.threads) == (2, 4.0, 5)
    assert spec.config == {"k": "base"}


# -- resolve_scaling -------------------------------------------------------------


def test_scaling_defaults() -> None:
    assert resolve_scaling(ScalingFields(), DeploymentOptions()) == ScalingSpec(
        min_replicas=0, max_replicas=4, target_concurrency=0.0, scale_to_zero_after_s=60.0,
        max_queued=1000, queue_timeout_s=60.0, initial_replicas=0, target_utilization=0.7,
        policy="kpa", policy_config={}, provisioned_replicas=0, schedules=[],
    )


def test_the_decorator_declares_idempotence_and_the_request_wins() -> None:
    declared = DeploymentOptions(idempotent=True)
    spec = resolve_scaling(ScalingFields(), declared)
    assert spec.retries.idempotent and spec.retries.attempts == 2  # the rest stays default
    asked = ScalingFields.model_validate({"retries": {"attempts": 3, "idempotent": False}})
    assert not resolve_scaling(asked, declared).retries.idempotent
    assert not resolve_scaling(ScalingFields(), DeploymentOptions()).retries.idempotent

def test_policy_fields_come_from_the_request_else_the_current_spec() -> None:
    request = ScalingFields(initial_replicas=2, target_utilization=0.9, policy="hybrid_histogram",
                            policy_config={"min_samples": 5}, provisioned_replicas=1,
                            schedules=["0 9 * * 1-5 for 9h keep 3"])
    spec = resolve_scaling(request, DeploymentOptions())
    assert (spec.initial_replicas, spec.target_utilization, spec.policy) == (2, 0.9, "hybrid_histogram")
    assert (spec.policy_config, spec.provisioned_replicas) == ({"min_samples": 5}, 1)
    assert spec.schedules == [ScheduleSpec(cron="0 9 * * 1-5", duration_s=32_400.0, replicas=3)]
    patched = resolve_scaling(DeploymentPatch(max_replicas=8), DeploymentOptions(), spec)
    assert patched == spec.model_copy(update={"max_replicas": 8})
    cleared = resolve_scaling(DeploymentPatch(schedules=[], policy_config={}), DeploymentOptions(), spec)
    assert (cleared.schedules, cleared.policy_config, cleared.policy) == ([], {}, "hybrid_histogram")


def test_scaling_precedence_request_over_options_over_defaults() -> None:
    options = DeploymentOptions(min_replicas=1, max_replicas=6, target_concurrency=3.0,
                                scale_to_zero_after_s=30.0)
    from_options = resolve_scaling(ScalingFields(), options)
    assert (from_options.min_replicas, from_options.max_replicas) == (1, 6)
    assert (from_options.target_concurrency, from_options.scale_to_zero_after_s) == (3.0, 30.0)
    request = ScalingFields(min_replicas=2, max_replicas=8, target_concurrency=5.0,
                            scale_to_zero_after_s=0.0, max_queued=5, queue_timeout_s=2.0)
    spec = resolve_scaling(request, options)
    assert spec == ScalingSpec(min_replicas=2, max_replicas=8, target_concurrency=5.0,
                               scale_to_zero_after_s=0.0, max_queued=5, queue_timeout_s=2.0)


def test_zero_values_in_the_request_are_not_treated_as_missing() -> None:
    options = DeploymentOptions(min_replicas=3, scale_to_zero_after_s=30.0)
    spec = resolve_scaling(ScalingFields(min_replicas=0, scale_to_zero_after_s=0, max_queued=0), options)
    assert (spec.min_replicas, spec.scale_to_zero_after_s, spec.max_queued) == (0, 0.0, 0)


def test_current_spec_is_the_base_for_a_patch() -> None:
    current = ScalingSpec(min_replicas=1, max_replicas=9, target_concurrency=2.0,
                          scale_to_zero_after_s=10.0, max_queued=50, queue_timeout_s=5.0)
    spec = resolve_scaling(DeploymentPatch(max_replicas=3), DeploymentOptions(), current)
    assert spec == current.model_copy(update={"max_replicas": 3})
    assert current.max_replicas == 9  # the current spec is not modified


def test_max_replicas_is_raised_to_min_replicas() -> None:
    spec = resolve_scaling(ScalingFields(min_replicas=7), DeploymentOptions())
    assert (spec.min_replicas, spec.max_replicas) == (7, 7)
    spec = resolve_scaling(ScalingFields(min_replicas=5, max_replicas=2), DeploymentOptions())
    assert (spec.min_replicas, spec.max_replicas) == (5, 5)


def test_deployment_request_carries_both_kinds_of_fields() -> None:
    request = DeploymentRequest(code=CODE, name="my-model", max_concurrency=2, min_replicas=1)
    assert resolve_runtime(request, request.code, DeploymentOptions()).max_concurrency == 2
    assert resolve_scaling(request, DeploymentOptions()).min_replicas == 1


# -- request validation ------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"min_replicas": -1}, {"max_replicas": 0}, {"target_concurrency": 0},
        {"scale_to_zero_after_s": -1}, {"queue_timeout_s": 0}, {"max_queued": -1},
        {"max_concurrency": 0}, {"timeout_s": 0}, {"memory_mb": 8}, {"threads": 0},
        {"replicas": 3}, {"name": "Bad_Name"}, {"name": "-lead"}, {"name": "a" * 64},
        {"target_utilization": 0}, {"target_utilization": 1.5}, {"initial_replicas": -1},
        {"policy": "idle_timeout"}, {"provisioned_replicas": -1}, {"schedules": ["every day keep 2"]},
        {"schedules": ["0 9 * * * for 1h keep 2"] * 65},
        {"rollout": {"watch_s": -1}}, {"rollout": {"watch_s": 90000}},
        {"rollout": {"thresholds": {"min_requests": 0}}},
        {"rollout": {"thresholds": {"error_ratio_relative": -0.1}}},
        {"rollout": {"thresholds": {"p95_min_delta_ms": -5}}},
        {"rollout": {"thresholds": {"max_error_ratio": 0.1}}},
    ],
)
def test_invalid_deployment_requests_are_rejected(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        DeploymentRequest(code=CODE, **fields)


@pytest.mark.parametrize(
    "code",
    [{"bundle": "A" * 64, "entrypoint": "app.py:M"}, {"bundle": "a" * 63, "entrypoint": "app.py:M"},
     {"bundle": "a" * 64, "entrypoint": "a:"}, {"bundle": "a" * 64, "entrypoint": "app.py:M", "x": 1}],
    ids=["upper-hex", "short", "short-entrypoint", "extra-key"],
)
def test_invalid_code_refs_are_rejected(code: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        CodeRef(**code)


@pytest.mark.parametrize("name", ["a", "my-model", "m0", "a" * 63, "0-0"])
def test_valid_names(name: str) -> None:
    assert DeploymentRequest(code=CODE, name=name).name == name


# -- code_key and digest -----------------------------------------------------------


def test_code_key_is_stable_and_short_hex() -> None:
    key = runtime().code_key()
    assert key == runtime().code_key()
    assert len(key) == 32
    int(key, 16)


@pytest.mark.parametrize(
    "change",
    [{"config": {"threshold": 0.9}}, {"max_concurrency": 64}, {"timeout_s": 1.0}, {"memory_mb": 256},
     {"threads": 8}],
    ids=["config", "max_concurrency", "timeout", "memory", "threads"],
)
def test_code_key_ignores_settings_that_do_not_change_what_is_imported(change: dict[str, Any]) -> None:
    assert runtime(**change).code_key() == runtime().code_key()


@pytest.mark.parametrize(
    "change",
    [{"bundle": OTHER_BUNDLE}, {"entrypoint": "app.py:Other"}, {"env": {"A": "1"}}, {"preload": ["torch"]}],
    ids=["bundle", "entrypoint", "env", "preload"],
)
def test_code_key_changes_with_the_code(change: dict[str, Any]) -> None:
    assert runtime(**change).code_key() != runtime().code_key()


def test_code_key_ignores_preload_order_and_env_order() -> None:
    assert runtime(preload=["torch", "numpy"]).code_key() == runtime(preload=["numpy", "torch"]).code_key()
    assert runtime(env={"A": "1", "B": "2"}).code_key() == runtime(env={"B": "2", "A": "1"}).code_key()


def test_digest_is_stable_and_ignores_key_order() -> None:
    assert runtime().digest() == runtime().digest()
    assert len(runtime().digest()) == 64
    assert runtime(config={"a": 1, "b": 2}).digest() == runtime(config={"b": 2, "a": 1}).digest()


@pytest.mark.parametrize(
    "change",
    [{"bundle": OTHER_BUNDLE}, {"entrypoint": "app.py:Other"}, {"preload": ["torch"]}, {"env": {"A": "1"}},
     {"config": {"k": 1}}, {"max_concurrency": 9}, {"timeout_s": 61.0}, {"memory_mb": 512}, {"threads": 2},
     {"models": [{"ref": "m@1.0.0", "name": "m", "version": "1.0.0"}]}, {"api": "llm"},
     {"secrets": {"TOKEN": "token"}}],
    ids=["bundle", "entrypoint", "preload", "env", "config", "max_concurrency", "timeout", "memory",
         "threads", "models", "api", "secrets"],
)
def test_digest_changes_when_any_runtime_field_changes(change: dict[str, Any]) -> None:
    assert runtime(**change).digest() != runtime().digest()


def test_every_runtime_field_is_covered_by_the_digest_tests() -> None:
    assert set(RuntimeSpec.model_fields) == {
        "bundle", "entrypoint", "preload", "env", "config", "max_concurrency", "timeout_s", "memory_mb",
        "threads", "models", "api", "secrets",
    }


def test_secrets_are_references_left_out_of_the_code_key_and_of_an_old_digest() -> None:
    with_secret = runtime(secrets={"TOKEN": "token"})
    assert with_secret.code_key() == runtime().code_key(), "a zygote never holds secret values"
    # Without secrets, the digest is the one recorded before secrets existed.
    fields = runtime().model_dump(exclude={"secrets"})
    assert runtime().digest() == hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
    for bad in ({"1X": "token"}, {"X": "-bad"}, {"X-Y": "token"}):
        with pytest.raises(ValidationError):
            DeploymentRequest.model_validate({"code": CODE.model_dump(), "secrets": bad})
    request = DeploymentRequest.model_validate({"code": CODE.model_dump(),
                                                "secrets": {"TOKEN": "api.token_1"}})
    assert resolve_runtime(request, CODE, DeploymentOptions()).secrets == {"TOKEN": "api.token_1"}


def test_a_request_names_exactly_one_source() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        DeploymentRequest.model_validate({})
    with pytest.raises(ValidationError, match="got code, llm"):
        DeploymentRequest.model_validate({"code": CODE.model_dump(), "llm": "gpt@1.0.0"})
    with pytest.raises(ValidationError):
        DeploymentRequest.model_validate({"llm": "no-version"})


def test_builtin_servers_need_no_code_bundle() -> None:
    request = DeploymentRequest.model_validate({"llm": "tiny-gpt@production"})
    assert request.api == "llm"
    assert request.served_model == "tiny-gpt@production"
    assert request.code_ref().bundle == ""
    assert request.code_ref().entrypoint == "stratus.llm.server:LLMServer"
    embeddings = DeploymentRequest.model_validate({"embeddings": "mini@1.0.0"})
    assert embeddings.api == "embeddings"
    assert embeddings.code_ref().entrypoint == "stratus.llm.embeddings:EmbeddingServer"
    native = DeploymentRequest.model_validate({"code": CODE.model_dump()})
    assert native.api == "native"
    assert native.code_ref() == CODE


# -- schedules ---------------------------------------------------------------------


def test_schedule_string_form() -> None:
    spec = ScheduleSpec.model_validate("55 8 * * 1-5 for 9h5m keep 3")
    assert spec == ScheduleSpec(cron="55 8 * * 1-5", duration_s=32_700.0, replicas=3, timezone="UTC")
    assert Schedule.of(spec) == Schedule("55 8 * * 1-5", 32_700.0, 3, "UTC")


def test_schedule_fields_form_with_a_timezone() -> None:
    spec = ScheduleSpec.model_validate({"cron": "0 9 * * *", "duration_s": 3600, "replicas": 2,
                                        "timezone": "Europe/Paris"})
    assert Schedule.of(spec) == Schedule("0 9 * * *", 3600.0, 2, "Europe/Paris")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0 9 * * * keep 2", "is not '<cron> for <duration> keep <replicas>'"),
        ("0 9 * * * for 1y keep 2", "is not a duration"),
        ("61 9 * * * for 1h keep 2", "not a valid cron expression"),
        ({"cron": "61 9 * * *", "duration_s": 60, "replicas": 1}, "not a valid cron expression"),
        ({"cron": "0 9 * * *", "duration_s": 60, "replicas": 1, "timezone": "Mars/Base"}, "invalid schedule"),
        ({"cron": "0 9 * * *", "duration_s": 0, "replicas": 1}, "greater than 0"),
        ({"cron": "0 9 * * *", "duration_s": 367 * 86400, "replicas": 1}, "less than or equal"),
        ({"cron": "0 9 * * *", "duration_s": 60, "replicas": 1001}, "less than or equal"),
        ({"cron": "0 9 * * *", "duration_s": 60, "replicas": 1, "every": "day"}, "Extra inputs"),
        (42, "valid dictionary"),
    ],
)
def test_invalid_schedules_are_rejected(value: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ScheduleSpec.model_validate(value)


def test_schedules_in_a_request_are_validated() -> None:
    request = DeploymentRequest(code=CODE, schedules=["*/30 * * * * for 10m keep 1",
                                                      {"cron": "0 0 * * 0", "duration_s": 60, "replicas": 4}])
    assert [s.replicas for s in request.schedules or []] == [1, 4]
    with pytest.raises(ValidationError, match="not a valid cron expression"):
        DeploymentRequest(code=CODE, schedules=["* * * for 10m keep 1"])


# -- target_concurrency ------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_concurrency", "expected"), [(1, 0.7), (2, 1.4), (8, 5.6), (10, 7.0), (100, 70.0)]
)
def test_default_target_is_seventy_percent_of_max_concurrency(max_concurrency: int, expected: float) -> None:
    target = target_concurrency(ScalingSpec(), runtime(max_concurrency=max_concurrency))
    assert target == pytest.approx(expected)


@pytest.mark.parametrize(
    ("target", "utilization", "max_concurrency", "expected"),
    [(3.0, 0.7, 100, 2.1), (3.0, 1.0, 100, 3.0), (0.5, 1.0, 1, 0.5), (10.0, 0.5, 2, 5.0), (0.0, 0.5, 8, 4.0),
     (0.01, 0.5, 8, 0.01)],
)
def test_explicit_target_is_scaled_by_the_utilization(
    target: float, utilization: float, max_concurrency: int, expected: float
) -> None:
    spec = ScalingSpec(target_concurrency=target, target_utilization=utilization)
    assert target_concurrency(spec, runtime(max_concurrency=max_concurrency)) == pytest.approx(expected)


@given(max_concurrency=st.integers(min_value=1, max_value=4096),
       utilization=st.floats(min_value=0.01, max_value=1.0))
def test_property_default_target_is_positive_and_at_most_the_limit(
    max_concurrency: int, utilization: float
) -> None:
    target = target_concurrency(ScalingSpec(target_utilization=utilization),
                                runtime(max_concurrency=max_concurrency))
    assert 0.0 < target <= max_concurrency
    assert target == pytest.approx(max(0.01, utilization * max_concurrency))


def test_a_rollout_takes_what_it_leaves_out_from_the_deployment() -> None:
    declared = RolloutStrategy.model_validate(
        {"canary": 10, "interval_s": 30, "watch_s": 5,
         "thresholds": {"min_requests": 4, "p95_min_delta_ms": 50}})
    assert RolloutSteps().over(declared) == RolloutSteps.model_validate(
        declared.model_dump(exclude={"promote"})), "nothing given: all the deployment's"
    given = RolloutRequest.model_validate({"to": 3, "canary": None, "watch_s": 0,
                                           "thresholds": {"min_errors": 2}})
    steps = given.over(declared)
    assert steps.canary is None and steps.watch_s == 0 and steps.interval_s == 30
    assert steps.thresholds.model_dump() == {
        "error_ratio_relative": 0.10, "min_errors": 2, "p95_relative": 0.50,
        "p95_min_delta_ms": 50.0, "min_requests": 4}, "thresholds are taken one by one"
    assert RolloutSteps().watch_s == 60.0, "the default watch"
