"""Deployment options a user can declare in code with ``@stratus.deployment``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class TensorSpec:
    """One declared input or output of a model, as in the v2 model metadata."""

    name: str
    datatype: str
    shape: list[int]


@dataclass(frozen=True)
class DeploymentOptions:
    """Defaults declared next to the code; a manifest or CLI flag overrides each one."""

    name: str | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    target_concurrency: float | None = None
    max_concurrency: int | None = None
    timeout_s: float | None = None
    memory_mb: int | None = None
    scale_to_zero_after_s: float | None = None
    threads: int | None = None
    # The handler may safely run twice for one request: a request lost with its replica after
    # reaching the handler may then be retried (the deployment's ``retries.idempotent``).
    idempotent: bool | None = None
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
