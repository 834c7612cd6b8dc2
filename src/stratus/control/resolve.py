"""The values a revision runs with. A value given in the request (manifest or CLI flag) wins
over the one declared in code with ``@stratus.deployment``, which wins over the platform
default."""

from __future__ import annotations

import re
from typing import Any

from stratus.resilience_spec import RetrySpec
from stratus.sdk.options import DeploymentOptions, TensorSpec
from stratus.spec import ApiKind, CodeRef, RuntimeFields, RuntimeSpec, ScalingFields, ScalingSpec


def _pick(*values: Any) -> Any:
    return next((value for value in values if value is not None), None)


def resolve_scaling(
    request: ScalingFields, options: DeploymentOptions, current: ScalingSpec | None = None
) -> ScalingSpec:
    base = current or ScalingSpec()
    spec = ScalingSpec(
        min_replicas=_pick(request.min_replicas, options.min_replicas, base.min_replicas),
        max_replicas=_pick(request.max_replicas, options.max_replicas, base.max_replicas),
        target_concurrency=_pick(
            request.target_concurrency, options.target_concurrency, base.target_concurrency
        ),
        scale_to_zero_after_s=_pick(
            request.scale_to_zero_after_s, options.scale_to_zero_after_s, base.scale_to_zero_after_s
        ),
        max_queued=_pick(request.max_queued, base.max_queued),
        queue_timeout_s=_pick(request.queue_timeout_s, base.queue_timeout_s),
        initial_replicas=_pick(request.initial_replicas, base.initial_replicas),
        target_utilization=_pick(request.target_utilization, base.target_utilization),
        policy=_pick(request.policy, base.policy),
        policy_config=_pick(request.policy_config, base.policy_config),
        provisioned_replicas=_pick(request.provisioned_replicas, base.provisioned_replicas),
        schedules=_pick(request.schedules, base.schedules),
        async_invocations=_pick(request.async_invocations, base.async_invocations),
        outliers=_pick(request.outliers, base.outliers),
        shedding=_pick(request.shedding, base.shedding),
        retries=_pick(request.retries, _declared_retries(options, base)),
    )
    if spec.min_replicas > spec.max_replicas:
        spec.max_replicas = spec.min_replicas
    return spec


def _declared_retries(options: DeploymentOptions, base: ScalingSpec) -> RetrySpec:
    """``@stratus.deployment(idempotent=...)`` sets that one field of the retries in force."""
    if options.idempotent is None:
        return base.retries
    return base.retries.model_copy(update={"idempotent": options.idempotent})


def resolve_runtime(
    fields: RuntimeFields, code: CodeRef, options: DeploymentOptions,
    base: RuntimeSpec | None = None, api: ApiKind = "native",
) -> RuntimeSpec:
    default = base or RuntimeSpec(bundle=code.bundle, entrypoint=code.entrypoint)
    return RuntimeSpec(
        bundle=code.bundle,
        entrypoint=code.entrypoint,
        api=api,
        preload=_pick(fields.preload, default.preload),
        env=_pick(fields.env, default.env),
        secrets=_pick(fields.secrets, default.secrets),
        config=_pick(fields.config, options.config or None, default.config),
        max_concurrency=_pick(fields.max_concurrency, options.max_concurrency, default.max_concurrency),
        timeout_s=_pick(fields.timeout_s, options.timeout_s, default.timeout_s),
        memory_mb=_pick(fields.memory_mb, options.memory_mb, default.memory_mb),
        threads=_pick(fields.threads, options.threads, default.threads),
    )


def deployment_name_for(model_ref: str) -> str:
    """A built-in server's default name: its model's, made fit for a deployment name."""
    name = re.sub(r"[^a-z0-9-]+", "-", model_ref.partition("@")[0].lower()).strip("-")
    return name[:63].strip("-")


def point_at_served_model(runtime: RuntimeSpec) -> None:
    """A built-in server learns which of its declared models it serves (the first) from its
    config, whatever a request or patch put there."""
    if runtime.api != "native" and runtime.models:
        runtime.config = {**runtime.config, "model": runtime.models[0]["name"]}


def options_from_meta(meta: dict[str, Any]) -> DeploymentOptions:
    raw = dict(meta.get("options") or {})
    raw["inputs"] = [TensorSpec(**spec) for spec in raw.get("inputs") or []]
    raw["outputs"] = [TensorSpec(**spec) for spec in raw.get("outputs") or []]
    return DeploymentOptions(**raw)
