"""The model registry's operations on the server: push, resolve references, and lay a
version's blobs out for replicas to load."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from stratus.errors import BadRequest
from stratus.models.formats import PICKLE_REFUSAL
from stratus.models.registry import (
    FORMATS,
    ModelRef,
    check_name,
    check_stage,
    parse_version,
)
from stratus.spec import SHA256_PATTERN
from stratus.store.blobs import NamespaceBlobs
from stratus.store.integrity import CorruptBlob
from stratus.store.models import ModelStore, ModelVersionRecord


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sha256: str = Field(pattern=SHA256_PATTERN)
    size: int = Field(ge=0)


class Lineage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str | None = None
    job: str | None = None
    parent: str | None = None  # a version of the same model


class ModelPushRequest(BaseModel):
    """Body of ``POST /api/models/{name}/versions``: the files must be uploaded first
    (``PUT /api/blobs/{sha256}``)."""

    model_config = ConfigDict(extra="forbid")

    version: str
    format: str
    files: dict[str, FileEntry] = Field(min_length=1, max_length=10_000)
    stage: str = "dev"
    framework: str | None = None
    task: str | None = None
    signature: dict[str, Any] | None = None
    parameters: dict[str, Any] = {}
    metrics: dict[str, float] = {}
    lineage: Lineage = Lineage()
    tags: dict[str, str] = {}
    trusted_pickle: bool = False
    source_format: str | None = None
    # The training split's statistics that inputs are normalised with, as the job saved them.
    preprocessing: dict[str, Any] | None = None
    # How a torch module is built again: {"class_path", "init_kwargs"} (set by a job).
    module: dict[str, Any] | None = None
    evaluations: list[dict[str, Any]] = Field(default=[], max_length=64)


def _check_path(relative: str) -> None:
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts or not relative or relative.startswith("."):
        raise BadRequest(f"model file path {relative!r} must be relative and stay inside the model")


class ModelService:
    def __init__(self, store: ModelStore, blobs: NamespaceBlobs) -> None:
        self.store = store
        self.blobs = blobs
        self.artifacts = blobs.artifacts

    def push(self, namespace: str, name: str, body: ModelPushRequest) -> ModelVersionRecord:
        check_name(name)
        semver = parse_version(body.version)
        check_stage(body.stage)
        if body.format not in FORMATS:
            raise BadRequest(f"format {body.format!r} is not one of {', '.join(FORMATS)}")
        if body.format == "pickle" and not body.trusted_pickle:
            raise BadRequest(PICKLE_REFUSAL)
        if body.lineage.parent is not None:
            parse_version(body.lineage.parent)
        for relative, entry in body.files.items():
            _check_path(relative)
            self.blobs.require(namespace, entry.sha256, relative)  # 404: not the namespace's
            try:
                self.artifacts.check_blob(entry.sha256, entry.size,
                                          f"{name}@{body.version} ({relative})")
            except CorruptBlob as exc:
                raise BadRequest(exc.message) from None
        meta = body.model_dump(include={"framework", "task", "signature", "parameters", "metrics",
                                        "tags", "trusted_pickle", "source_format",
                                        "preprocessing", "module", "evaluations"})
        for key in ("preprocessing", "module", "evaluations"):  # only a job's versions
            if not meta[key]:
                del meta[key]
        meta["lineage"] = body.lineage.model_dump()
        files = {relative: entry.model_dump() for relative, entry in body.files.items()}
        return self.store.create_version(namespace, name, body.version, semver,
                                         body.format, files, meta, body.stage)

    def resolve(self, namespace: str, refs: list[str]) -> list[dict[str, Any]]:
        """Turn references into the exact versions a revision will load."""
        resolved: list[dict[str, Any]] = []
        names: set[str] = set()
        for text in refs:
            ref = ModelRef.parse(text)
            if ref.name in names:
                raise BadRequest(f"model {ref.name!r} is referenced twice")
            names.add(ref.name)
            record = ref.resolve(self.store.versions(namespace, ref.name))
            resolved.append({
                "ref": str(ref), "name": ref.name, "version": record.version,
                "stage": ref.stage, "format": record.format, "files": record.files,
                "meta": record.meta,
            })
        return resolved

    def lay_out(self, resolved: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Add what a replica needs to load each model: its directory and the paths of its
        files' plaintext, decrypted and verified once into the memory cache (later calls cost
        a stat per file, unless the sealed blob changed)."""
        laid_out = []
        for model in resolved:
            files = {}
            for relative, entry in model["files"].items():
                path = self.artifacts.plain_blob(
                    entry["sha256"], int(entry["size"]),
                    f"model {model['name']}@{model['version']} ({relative})")
                files[relative] = {**entry, "path": str(path)}
            directory: Path = self.artifacts.model_dir(model["files"])
            laid_out.append({**model, "files": files, "dir": str(directory)})
        return laid_out

    def summaries(self, namespace: str) -> list[dict[str, Any]]:
        result = []
        for name in self.store.names(namespace):
            versions = self.store.versions(namespace, name)
            stages = {r.stage: r.version for r in sorted(versions, key=lambda r: r.promoted_at)
                      if r.stage != "archived"}
            result.append({"name": name, "versions": [r.version for r in versions],
                           "latest": versions[-1].version if versions else None, "stages": stages})
        return result
