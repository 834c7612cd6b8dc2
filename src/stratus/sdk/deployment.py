"""The ``@stratus.deployment`` decorator: attaches options to a handler, changes nothing else."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from stratus.sdk.options import DeploymentOptions, TensorSpec

OPTIONS_ATTRIBUTE = "__stratus_deployment__"

T = TypeVar("T")


def _tensor_specs(specs: Sequence[Mapping[str, Any] | TensorSpec] | None) -> list[TensorSpec]:
    result: list[TensorSpec] = []
    for spec in specs or ():
        if isinstance(spec, TensorSpec):
            result.append(spec)
        else:
            result.append(
                TensorSpec(
                    name=str(spec["name"]),
                    datatype=str(spec["datatype"]).upper(),
                    shape=[int(d) for d in spec["shape"]],
                )
            )
    return result


def deployment(
    *,
    name: str | None = None,
    min_replicas: int | None = None,
    max_replicas: int | None = None,
    target_concurrency: float | None = None,
    max_concurrency: int | None = None,
    timeout_s: float | None = None,
    memory_mb: int | None = None,
    scale_to_zero_after_s: float | None = None,
    threads: int | None = None,
    idempotent: bool | None = None,
    inputs: Sequence[Mapping[str, Any] | TensorSpec] | None = None,
    outputs: Sequence[Mapping[str, Any] | TensorSpec] | None = None,
    config: Mapping[str, Any] | None = None,
) -> Callable[[T], T]:
    """Declare a deployment. The class's ``__init__(self, ctx)`` runs once per replica and
    ``__call__(self, request)`` (sync or async) serves each request."""
    options = DeploymentOptions(
        name=name,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        target_concurrency=target_concurrency,
        max_concurrency=max_concurrency,
        timeout_s=timeout_s,
        memory_mb=memory_mb,
        scale_to_zero_after_s=scale_to_zero_after_s,
        threads=threads,
        idempotent=idempotent,
        inputs=_tensor_specs(inputs),
        outputs=_tensor_specs(outputs),
        config=dict(config or {}),
    )

    def attach(target: T) -> T:
        setattr(target, OPTIONS_ATTRIBUTE, options)
        return target

    return attach


def options_of(target: object) -> DeploymentOptions:
    found = getattr(target, OPTIONS_ATTRIBUTE, None)
    return found if isinstance(found, DeploymentOptions) else DeploymentOptions()
