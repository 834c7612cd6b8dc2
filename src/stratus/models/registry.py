"""Model versions, stages and references (``name@1.2.0``, ``name@production``): pure rules."""

from __future__ import annotations

import re
from dataclasses import dataclass

from stratus.errors import BadRequest, NotFound
from stratus.store.models import ModelVersionRecord

STAGES = ("dev", "staging", "production", "archived")
# Promoting into these moves the version that held the stage to "archived".
EXCLUSIVE_STAGES = ("staging", "production")
FORMATS = ("safetensors", "transformers", "onnx", "pickle")
_SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)")
_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def parse_version(text: str) -> tuple[int, int, int]:
    match = _SEMVER.fullmatch(text)
    if match is None:
        raise BadRequest(f"version {text!r} is not MAJOR.MINOR.PATCH (for example 1.4.0)")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise BadRequest(f"model name {name!r} must be lowercase letters, digits and dashes")
    return name


def check_stage(stage: str) -> str:
    if stage not in STAGES:
        raise BadRequest(f"stage {stage!r} is not one of {', '.join(STAGES)}")
    return stage


@dataclass(frozen=True)
class ModelRef:
    """``name@1.2.0`` pins a version; ``name@production`` follows a stage; ``name`` alone is
    the newest version that is not archived."""

    name: str
    version: str | None = None
    stage: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        name, _, selector = text.strip().partition("@")
        check_name(name)
        if not selector:
            return cls(name)
        if _SEMVER.fullmatch(selector):
            return cls(name, version=selector)
        if selector in STAGES:
            return cls(name, stage=selector)
        raise BadRequest(f"model reference {text!r}: after '@' comes a version (1.2.0) or a "
                         f"stage ({', '.join(STAGES)})")

    def __str__(self) -> str:
        selector = self.version or self.stage
        return f"{self.name}@{selector}" if selector else self.name

    def resolve(self, versions: list[ModelVersionRecord]) -> ModelVersionRecord:
        if not versions:
            raise NotFound(f"model {self.name!r} not found")
        if self.version is not None:
            for record in versions:
                if record.version == self.version:
                    return record
            raise NotFound(f"model {self.name!r} has no version {self.version}")
        if self.stage is not None:
            staged = [r for r in versions if r.stage == self.stage]
            if not staged:
                raise NotFound(f"model {self.name!r} has no version in stage {self.stage}")
            if self.stage in EXCLUSIVE_STAGES:
                return max(staged, key=lambda r: r.promoted_at)
            return max(staged, key=lambda r: parse_version(r.version))
        live = [r for r in versions if r.stage != "archived"]
        if not live:
            raise NotFound(f"model {self.name!r} has only archived versions")
        return max(live, key=lambda r: parse_version(r.version))
