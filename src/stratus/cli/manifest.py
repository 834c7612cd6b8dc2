"""Reads a ``stratus.yaml`` manifest and turns a deploy target into (code root, entrypoint)."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# Modules whose import dominates start-up; worth importing once in the zygote.
HEAVY_MODULES = ("torch", "transformers", "onnxruntime", "sklearn", "scipy", "pandas")
MANIFEST_KEYS = {
    "name", "entrypoint", "min_replicas", "max_replicas", "target_concurrency",
    "max_concurrency", "timeout_s", "memory_mb", "scale_to_zero_after_s", "max_queued",
    "queue_timeout_s", "threads", "preload", "env", "config", "policy", "policy_config",
    "initial_replicas", "target_utilization", "provisioned_replicas", "schedules", "models",
    "llm", "embeddings", "rollout", "secrets", "outliers", "shedding", "retries",
    "async_invocations",
}
BUILTIN_KEYS = ("llm", "embeddings")  # serve a model from the store; no code to upload


class ManifestError(ValueError):
    pass


@dataclass
class Target:
    """What to deploy: code (root, entrypoint, source), or only settings naming a built-in
    server (``llm: name@stage``), in which case the three code fields are None."""

    root: Path | None
    entrypoint: str | None
    source: Path | None
    settings: dict[str, Any] = field(default_factory=dict)


def load_target(target: str) -> Target:
    """``path/file.py:Object`` or a ``stratus.yaml`` path."""
    if target.endswith((".yaml", ".yml")):
        return _from_manifest(Path(target))
    if not _is_target(target):
        raise ManifestError(f"target {target!r} must be 'path/to/file.py:Object' or a stratus.yaml")
    file_part, _, attribute = target.rpartition(":")
    source = Path(file_part).resolve()
    if not source.is_file():
        raise ManifestError(f"{file_part} does not exist")
    return Target(root=source.parent, entrypoint=f"{source.name}:{attribute}", source=source)


def _is_target(target: str) -> bool:
    """``file.py:Object``: a Python file and one identifier (the server imports no deeper)."""
    file_part, sep, attribute = target.rpartition(":")
    return bool(sep) and file_part.endswith(".py") and attribute.isidentifier()


def _from_manifest(path: Path) -> Target:
    if not path.is_file():
        raise ManifestError(f"{path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path} must hold a mapping")
    unknown = set(data) - MANIFEST_KEYS
    retries = data.get("retries")
    if isinstance(retries, dict) and True in retries:
        # YAML 1.1 reads a bare ``on:`` key as the boolean true; retries mean the word.
        retries["on"] = retries.pop(True)
    if unknown:
        raise ManifestError(f"{path}: unknown keys {sorted(unknown)}")
    builtins = [key for key in BUILTIN_KEYS if key in data]
    if builtins:
        if len(builtins) > 1 or "entrypoint" in data:
            raise ManifestError(f"{path}: give one of 'entrypoint', 'llm' or 'embeddings'")
        if not isinstance(data[builtins[0]], str):
            raise ManifestError(f"{path}: '{builtins[0]}' takes a model reference, name@version")
        return Target(root=None, entrypoint=None, source=None, settings=data)
    entrypoint = data.pop("entrypoint", None)
    if not isinstance(entrypoint, str) or not _is_target(entrypoint):
        raise ManifestError(f"{path}: 'entrypoint: file.py:Object' is required")
    root = path.resolve().parent
    source = (root / entrypoint.rpartition(":")[0]).resolve()
    if not source.is_file():
        raise ManifestError(f"{path}: entrypoint file {source} does not exist")
    return Target(root=root, entrypoint=entrypoint, source=source, settings=data)


def heavy_imports(source: Path) -> list[str]:
    """Top-level packages among HEAVY_MODULES that the entrypoint file imports."""
    try:
        tree = ast.parse(source.read_text(), filename=str(source))
    except (SyntaxError, UnicodeDecodeError):
        return []
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return [module for module in HEAVY_MODULES if module in found]
