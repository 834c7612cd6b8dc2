"""Deployment and traffic specs: what a client asks for, and the resolved values a revision
runs with (``control/resolve.py`` applies the precedence between them)."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from stratus.resilience_spec import OutliersSpec, RetrySpec, SheddingSpec

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
MODULE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.]*$"
SECRET_NAME_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,126}[A-Za-z0-9])?$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_SCHEDULE = re.compile(r"^(?P<cron>.+?)\s+for\s+(?P<duration>\S+)\s+keep\s+(?P<replicas>\d+)$")
SecretRefs = dict[Annotated[str, StringConstraints(pattern=ENV_NAME_PATTERN)],
                  Annotated[str, StringConstraints(pattern=SECRET_NAME_PATTERN)]]


# -- traffic: the split, the shadow, the sticky key, and how a rollout proceeds --------

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
    """When the judge rolls a new revision back (``control/rollout.py``'s
    ``RollbackThresholds``, whose defaults these are)."""

    model_config = ConfigDict(extra="forbid")

    error_ratio_relative: float = Field(default=0.10, ge=0, le=100)
    min_errors: int = Field(default=5, ge=1, le=1_000_000)
    p95_relative: float = Field(default=0.50, ge=0, le=100)
    p95_min_delta_ms: float = Field(default=20.0, ge=0, le=3_600_000)
    min_requests: int = Field(default=20, ge=1, le=1_000_000)


class RolloutSteps(BaseModel):
    """Without ``canary`` traffic switches at once (blue-green) once the new revision is warm;
    with it, it steps through ``canary_plan(canary, step)``, judged at every step. Either way
    the switch to 100% is then watched for ``watch_s``, judged against the previous revision."""

    model_config = ConfigDict(extra="forbid")

    canary: int | None = Field(default=None, ge=1, le=100)
    step: int = Field(default=25, ge=1, le=100)
    interval_s: float = Field(default=60.0, gt=0, le=86400)
    window_s: float | None = Field(default=None, gt=0, le=86400,
                                   description="how far back the judge looks; default interval_s")
    watch_s: float = Field(default=60.0, ge=0, le=86400,
                           description="after the switch to 100%, how long the new revision is "
                                       "judged while the previous one stays warm; 0: not at all")
    thresholds: RolloutThresholdsSpec = RolloutThresholdsSpec()

    def over(self, base: RolloutSteps) -> RolloutSteps:
        """``base`` (a deployment's declared steps) with the fields given here instead: what
        one rollout runs with. Thresholds are taken one by one."""
        fields = set(RolloutSteps.model_fields)
        data = base.model_dump(include=fields)
        for key in self.model_fields_set & fields:
            if key == "thresholds":
                given = self.thresholds
                data[key].update(given.model_dump(include=given.model_fields_set))
            else:
                data[key] = getattr(self, key)
        return RolloutSteps.model_validate(data)


class RolloutRequest(RolloutSteps):
    """Body of ``POST /api/deployments/{name}/rollout``."""

    to: int = Field(ge=1, description="the revision to roll out")


class RolloutStrategy(RolloutSteps):
    """How a deploy that records a new revision rolls it out. All but ``promote`` are kept as
    the deployment's own: later rollouts take the fields they leave out from them."""

    promote: bool = Field(default=True, description="false: record the revision, but send it "
                                                    "no traffic until told to")


# -- deployments ------------------------------------------------------------------------

class CodeRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bundle: str = Field(pattern=SHA256_PATTERN, description="sha256 of an uploaded code bundle")
    entrypoint: str = Field(min_length=3, max_length=512, description="'file.py:Object'")


PolicyName = Literal["kpa", "fixed_keepalive", "hybrid_histogram"]


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``9h5m``, ``30d`` -> seconds."""
    text = text.strip()
    if text.isdigit():
        return float(text)
    match = _DURATION.match(text)
    if not text or match is None:
        raise ValueError(f"{text!r} is not a duration like 30s, 15m, 9h5m or 30d")
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return float(days * 86400 + hours * 3600 + minutes * 60 + seconds)


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
        if not isinstance(value, str):
            return value
        match = _SCHEDULE.match(value.strip())
        if match is None:
            raise ValueError(f"{value!r} is not '<cron> for <duration> keep <replicas>'")
        return {"cron": match["cron"], "duration_s": parse_duration(match["duration"]),
                "replicas": int(match["replicas"])}

    @model_validator(mode="after")
    def _check(self) -> ScheduleSpec:
        if not croniter.is_valid(self.cron):
            raise ValueError(f"invalid schedule: {self.cron!r} is not a valid cron expression")
        try:
            ZoneInfo(self.timezone)
        except (ValueError, KeyError) as exc:
            raise ValueError(f"invalid schedule: {exc}") from None
        return self


class Destination(BaseModel):
    """Where an asynchronous invocation's outcome goes: a webhook (signed with HMAC-SHA256,
    keyed by one of the namespace's secrets), another deployment, or a topic."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, max_length=2048, pattern=r"^https?://[^\s]+$",
                            description="an http(s) URL that receives a signed POST")
    secret: str | None = Field(default=None, pattern=SECRET_NAME_PATTERN,
                               description="the namespace secret whose value signs the webhook")
    deployment: str | None = Field(default=None, pattern=NAME_PATTERN)
    topic: str | None = Field(default=None, pattern=NAME_PATTERN)

    @model_validator(mode="after")
    def _one_target(self) -> Destination:
        given = [key for key in ("url", "deployment", "topic") if getattr(self, key) is not None]
        if len(given) != 1:
            raise ValueError("a destination names exactly one of 'url', 'deployment' or 'topic'")
        if self.url is not None and self.secret is None:
            raise ValueError("a webhook destination needs 'secret': the namespace secret that "
                             "signs its requests")
        return self


class AsyncSpec(BaseModel):
    """How a deployment's asynchronous invocations are retried, kept and reported."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(default=3, ge=1, le=100)
    max_event_age_s: float = Field(default=6 * 3600.0, ge=1, le=14 * 86400)
    backoff_base_s: float = Field(default=1.0, gt=0, le=3600)
    backoff_cap_s: float = Field(default=300.0, gt=0, le=86400)
    # The share of the deployment's slots async work may hold; the rest stays for sync calls.
    share: float = Field(default=0.5, gt=0, le=1)
    on_success: Destination | None = None
    on_failure: Destination | None = None


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
    async_invocations: AsyncSpec | None = None
    outliers: OutliersSpec | None = None
    shedding: SheddingSpec | None = None
    retries: RetrySpec | None = None


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
    async_invocations: AsyncSpec = AsyncSpec()
    outliers: OutliersSpec = OutliersSpec()
    shedding: SheddingSpec = SheddingSpec()
    retries: RetrySpec = RetrySpec()


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


def target_concurrency(scaling: ScalingSpec, runtime: RuntimeSpec) -> float:
    """As Knative: the target (by default the hard per-replica limit) times the target
    utilization (by default 70%)."""
    target = scaling.target_concurrency or float(runtime.max_concurrency)
    return max(0.01, target * scaling.target_utilization)

