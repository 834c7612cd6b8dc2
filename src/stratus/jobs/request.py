"""What a job submission says (``POST /api/jobs``) and the server's ``jobs:`` settings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from stratus.spec import CodeRef

Scalar = str | int | float | bool | None
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
DEFAULT_PRELOAD = ("torch",)  # jobs fork from the zygote that holds torch: checkpoints need it
MAX_PARAM_KEY = 128


class DeployTarget(BaseModel):
    """Roll a registered version out to a deployment that serves the model."""

    model_config = ConfigDict(extra="forbid")

    deployment: str = Field(pattern=NAME_PATTERN)
    canary: int | None = Field(default=None, ge=1, le=100,
                               description="first percent of a canary; none: switch once warm")
    step: int = Field(default=25, ge=1, le=100)
    interval_s: float = Field(default=60.0, gt=0, le=86400)


class Registration(BaseModel):
    """``register`` of a job: the model it saves becomes a registry version if it passes the
    gate, judged on its evaluation on ``dataset``'s ``split``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    version: str | None = Field(default=None, description="default: the latest's next minor")
    stage: str = "staging"
    gate: list[str] = Field(default_factory=list, max_length=32,
                            description="thresholds, e.g. 'accuracy>=0.9'")
    gate_vs: str | None = Field(default=None, description="a stage (production): the new "
                                "version must not do worse than the version in it")
    tolerance: float = Field(default=0.0, ge=0, le=1e9)
    dataset: str | None = Field(default=None, description="default: the job's first dataset")
    split: str = Field(default="test", pattern=NAME_PATTERN)
    deploy: DeployTarget | None = None


class JobRequest(BaseModel):
    """Body of ``POST /api/jobs``. The code bundle is uploaded first (``PUT /api/blobs/...``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    code: CodeRef
    params: dict[str, Scalar] = Field(default_factory=dict, max_length=256)
    datasets: list[str] = Field(default_factory=list, max_length=16,
                                description="dataset references, name@version or name (latest)")
    experiment: str | None = Field(default=None, pattern=NAME_PATTERN,
                                   description="groups runs to compare")
    memory_mb: int | None = Field(default=None, ge=64, le=1 << 20)
    timeout_s: float | None = Field(default=None, gt=0, le=30 * 86400)
    # What to register the job's model as, and its gate (``register`` in the body; the name
    # would shadow pydantic's own).
    registration: Registration | None = Field(default=None, alias="register")
    models: list[str] = Field(default_factory=list, max_length=8, description=(
        "registry versions the job loads with ctx.load_model (name@version or name@stage)"))
    workers: int = Field(default=1, ge=1, le=1024, description="processes; only 1 for now")
    preload: list[str] | None = Field(default=None, max_length=64,
                                      description="modules the zygote imports; default torch")
    env: dict[str, str] = Field(default_factory=dict, max_length=128)
    threads: int = Field(default=1, ge=1, le=256, description="torch and BLAS threads")
    resume_from: str | None = Field(default=None, max_length=40, description=(
        "a job whose latest checkpoint ctx.load_checkpoint() returns until this one saves its "
        "own: a new attempt of it"))

    @field_validator("params")
    @classmethod
    def _keys(cls, params: dict[str, Scalar]) -> dict[str, Scalar]:
        for key, value in params.items():
            if not key or len(key) > MAX_PARAM_KEY:
                raise ValueError(f"a parameter name has 1 to {MAX_PARAM_KEY} characters")
            if isinstance(value, float) and value != value:  # NaN: not a value to compare
                raise ValueError(f"parameter {key!r} is NaN")
        return params

    @field_validator("datasets")
    @classmethod
    def _refs(cls, refs: list[str]) -> list[str]:
        for ref in refs:
            if not ref or len(ref) > 200 or ref.strip() != ref:
                raise ValueError(f"{ref!r} is not a dataset reference like iris@1")
        if len(set(refs)) != len(refs):
            raise ValueError("a dataset is listed twice")
        return refs

    @field_validator("preload")
    @classmethod
    def _modules(cls, modules: list[str] | None) -> list[str] | None:
        for module in modules or []:
            if not all(part.isidentifier() for part in module.split(".")):
                raise ValueError(f"{module!r} is not a module name")
        return modules


class JobsConfig(BaseModel):
    """The ``jobs:`` section of the server's config file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_running: int = Field(default=2, ge=1, le=1024)  # the rest wait, queued, in order
    idle_zygote_s: float = Field(default=120.0, ge=0)  # keep a job's imported code this long


def jobs_config(section: Mapping[str, Any]) -> JobsConfig:
    """Validate the config file's ``jobs`` section; ValueError names what is wrong."""
    try:
        return JobsConfig.model_validate(dict(section))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'jobs'}: {e['msg']}"
                             for e in exc.errors())
        raise ValueError(f"jobs: {problems}") from None
