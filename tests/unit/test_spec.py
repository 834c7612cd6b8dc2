"""Unit tests for deployment specs: precedence of settings, code keys, digests and targets."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from stratus.sdk.options import DeploymentOptions
from stratus.spec import (
    CodeRef,
    DeploymentPatch,
    DeploymentRequest,
    RuntimeFields,
    RuntimeSpec,
    ScalingFields,
    ScalingSpec,
    resolve_runtime,
    resolve_scaling,
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
        max_queued=1000, queue_timeout_s=60.0,
    )


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
     {"config": {"k": 1}}, {"max_concurrency": 9}, {"timeout_s": 61.0}, {"memory_mb": 512}, {"threads": 2}],
    ids=["bundle", "entrypoint", "preload", "env", "config", "max_concurrency", "timeout", "memory",
         "threads"],
)
def test_digest_changes_when_any_runtime_field_changes(change: dict[str, Any]) -> None:
    assert runtime(**change).digest() != runtime().digest()


def test_every_runtime_field_is_covered_by_the_digest_tests() -> None:
    assert set(RuntimeSpec.model_fields) == {
        "bundle", "entrypoint", "preload", "env", "config", "max_concurrency", "timeout_s", "memory_mb",
        "threads",
    }


# -- target_concurrency ------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_concurrency", "expected"), [(1, 1.0), (2, 1.4), (8, 5.6), (10, 7.0), (100, 70.0)]
)
def test_default_target_is_seventy_percent_of_max_concurrency(max_concurrency: int, expected: float) -> None:
    target = target_concurrency(ScalingSpec(), runtime(max_concurrency=max_concurrency))
    assert target == pytest.approx(expected)


def test_explicit_target_wins() -> None:
    assert target_concurrency(ScalingSpec(target_concurrency=3.0), runtime(max_concurrency=100)) == 3.0
    assert target_concurrency(ScalingSpec(target_concurrency=0.5), runtime(max_concurrency=1)) == 0.5


@given(max_concurrency=st.integers(min_value=1, max_value=4096))
def test_property_default_target_is_at_least_one_and_at_most_the_limit(max_concurrency: int) -> None:
    target = target_concurrency(ScalingSpec(), runtime(max_concurrency=max_concurrency))
    assert 1.0 <= target <= max_concurrency
    assert target == pytest.approx(max(1.0, 0.7 * max_concurrency))
