"""Deployment specs: what a client asks for, and the resolved values a revision runs with.

A value given in the request (manifest or CLI flag) wins over the one declared in code
with ``@stratus.deployment``, which wins over the platform default.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from stratus.control.floors import Schedule
from stratus.sdk.options import DeploymentOptions
from stratus.traffic_spec import RolloutRequest, RolloutStrategy, StickySpec, TrafficUpdate

__all__ = ["RolloutRequest", "RolloutStrategy", "StickySpec", "TrafficUpdate"]  # re-exported

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
MODULE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.]*$"
SECRET_NAME_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,126}[A-Za-z0-9])?$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
SecretRefs = dict[Annotated[str, StringConstraints(pattern=ENV_NAME_PATTERN)],
                  Annotated[str, StringConstraints(pattern=SECRET_NAME_PATTERN)]]


class CodeRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bundle: str = Field(pattern=SHA256_PATTERN, description="sha256 of an uploaded code bundle")
    entrypoint: str = Field(min_length=3, max_length=512, description="'file.py:Object'")


PolicyName = Literal["kpa", "fixed_keepalive", "hybrid_histogram"]


class ScheduleSpec(BaseModel):
    """A scheduled floor: from each time ``cron`` fires, keep ``replicas`` warm for
    ``duration_s``. Also written ``"55 8 * * 1-5 for 9h5m keep 3"``."""

    model_config = ConfigDict(extra="forbid")

    cron: str
    duration_s: float = Field(gt=0, le=366 * 86400)
    replicas: int = Field(ge=0, le=1000)
    timezone: str = "UTC"

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                parsed = Schedule.parse(value)
            except ValueError as exc:
                raise ValueError(str(exc)) from None
            return {"cron": parsed.cron, "duration_s": parsed.duration_s,
                    "replicas": parsed.replicas}
        return value

    @model_validator(mode="after")
    def _check(self) -> ScheduleSpec:
        try:
            self.schedule()
        except (ValueError, KeyError) as exc:
            raise ValueError(f"invalid schedule: {exc}") from None
        return self

    def schedule(self) -> Schedule:
        return Schedule(self.cron, self.duration_s, self.replicas, self.timezone)


class ScalingFields(BaseModel):
    """Scaling settings live on the deployment: changing them creates no revision."""

    model_config = ConfigDict(extra="forbid")

    min_replicas: int | None = Field(default=None, ge=0, le=1000)
    max_replicas: int | None = Field(default=None, ge=1, le=1000)
    initial_replicas: int | None = Field(default=None, ge=0, le=1000)
    target_concurrency: float | None = Field(default=None, gt=0, le=10000)
    target_utilization: float | None = Field(default=None, gt=0, le=1)
    scale_to_zero_after_s: float | None = Field(default=None, ge=0, le=86400)
    max_queued: int | None = Field(default=None, ge=0, le=1_000_000)
    queue_timeout_s: float | None = Field(default=None, gt=0, le=3600)
    policy: PolicyName | None = None
    policy_config: dict[str, Any] | None = None
    provisioned_replicas: int | None = Field(default=None, ge=0, le=1000)
    schedules: list[ScheduleSpec] | None = Field(default=None, max_length=64)


class RuntimeFields(BaseModel):
    """Runtime settings belong to a revision: changing one creates a new revision."""

    model_config = ConfigDict(extra="forbid")

    max_concurrency: int | None = Field(default=None, ge=1, le=4096)
    timeout_s: float | None = Field(default=None, gt=0, le=3600)
    memory_mb: int | None = Field(default=None, ge=16, le=1_048_576)
    threads: int | None = Field(default=None, ge=1, le=256)
    preload: list[str] | None = Field(default=None, max_length=64)
    env: dict[str, str] | None = None
    secrets: SecretRefs | None = Field(
        default=None, max_length=64,
        description="environment variables set from the namespace's secrets: {ENV_NAME: secret}")
    config: dict[str, Any] | None = None
    models: list[str] | None = Field(default=None, max_length=32,
                                     description="model references: name@1.2.0 or name@production")


ApiKind = Literal["native", "llm", "embeddings"]

# The handlers Stratus ships: ``--llm`` and ``--embeddings`` deploy these with no code upload.
BUILTIN_ENTRYPOINTS: dict[str, str] = {
    "llm": "stratus.llm.server:LLMServer",
    "embeddings": "stratus.llm.embeddings:EmbeddingServer",
}
MODEL_REF_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*@[A-Za-z0-9][A-Za-z0-9.+_-]*$"


class DeploymentRequest(ScalingFields, RuntimeFields):
    """Body of ``POST /api/deployments``: user code, or a model for a built-in server."""

    name: str | None = Field(default=None, pattern=NAME_PATTERN)
    code: CodeRef | None = None
    llm: str | None = Field(default=None, pattern=MODEL_REF_PATTERN,
                            description="serve this causal LM (name@version or name@stage) "
                                        "with the continuous-batching engine")
    embeddings: str | None = Field(default=None, pattern=MODEL_REF_PATTERN,
                                   description="serve this embedding model")
    rollout: RolloutStrategy | None = Field(
        default=None, description="how a new revision takes traffic; default: blue-green")

    @model_validator(mode="after")
    def _one_source(self) -> DeploymentRequest:
        given = [key for key in ("code", "llm", "embeddings") if getattr(self, key) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'code', 'llm' or 'embeddings'"
                             + (f" (got {', '.join(given)})" if given else ""))
        return self

    @property
    def api(self) -> ApiKind:
        if self.llm is not None:
            return "llm"
        if self.embeddings is not None:
            return "embeddings"
        return "native"

    @property
    def served_model(self) -> str | None:
        """The model a built-in server serves."""
        return self.llm or self.embeddings

    def code_ref(self) -> CodeRef:
        if self.code is not None:
            return self.code
        return CodeRef.model_construct(bundle="", entrypoint=BUILTIN_ENTRYPOINTS[self.api])


class DeploymentPatch(ScalingFields, RuntimeFields):
    """Body of ``PATCH /api/deployments/{name}``: only the fields to change."""


class ScalingSpec(BaseModel):
    min_replicas: int = 0
    max_replicas: int = 4
    initial_replicas: int = 0
    target_concurrency: float = 0.0  # 0 = the revision's max_concurrency
    target_utilization: float = 0.7
    scale_to_zero_after_s: float = 60.0
    max_queued: int = 1000
    queue_timeout_s: float = 60.0
    policy: PolicyName = "kpa"
    policy_config: dict[str, Any] = {}
    provisioned_replicas: int = 0
    schedules: list[ScheduleSpec] = []


class RuntimeSpec(BaseModel):
    """Everything a revision's replicas run with. Immutable once recorded."""

    bundle: str  # "" for a built-in server, which imports from the installed package
    entrypoint: str
    api: ApiKind = "native"  # which protocol adapters may call it
    preload: list[str] = []
    env: dict[str, str] = {}
    # ENV_NAME -> secret name; the values are read when a replica starts, never stored here.
    secrets: dict[str, str] = {}
    config: dict[str, Any] = {}
    max_concurrency: int = 8
    timeout_s: float = 60.0
    memory_mb: int | None = None
    threads: int = 1
    # Each: {"ref", "name", "version", "stage", "format", "files", "meta"}, resolved when the
    # revision is recorded, so a revision always loads the same weights.
    models: list[dict[str, Any]] = []

    def digest(self) -> str:
        # Without secrets, the digest is the one recorded before secrets existed: an
        # unchanged spec still makes no new revision.
        fields = self.model_dump(exclude=None if self.secrets else {"secrets"})
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()

    def code_key(self) -> str:
        """Identifies what the zygote imports; revisions with equal code share a zygote."""
        code = {
            "bundle": self.bundle,
            "entrypoint": self.entrypoint,
            "preload": sorted(self.preload),
            "env": self.env,
        }
        return hashlib.sha256(json.dumps(code, sort_keys=True).encode()).hexdigest()[:32]


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
    )
    if spec.min_replicas > spec.max_replicas:
        spec.max_replicas = spec.min_replicas
    return spec


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


def target_concurrency(scaling: ScalingSpec, runtime: RuntimeSpec) -> float:
    """As Knative: the target (by default the hard per-replica limit) times the target
    utilization (by default 70%)."""
    target = scaling.target_concurrency or float(runtime.max_concurrency)
    return max(0.01, target * scaling.target_utilization)

