"""Server settings: where data lives, limits, and timings of the control loop."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from stratus.errors import BadRequest

ADMIN_KEY_ENV = "STRATUS_ADMIN_KEY"
CONFIG_ENV = "STRATUS_CONFIG"
# Sections of the server's config file; each feature validates its own.
CONFIG_SECTIONS = ("alerts", "prices", "tracing", "logging", "auth", "quotas", "sandbox", "queue",
                   "jobs", "tracking", "audit", "artifacts")
QUEUE_ENV = "STRATUS_QUEUE_URL"
PRELOAD_ALLOW_ENV = "STRATUS_PRELOAD_ALLOW"
# What a deployment or job may ask the profile zygote to import (``preload``): it imports
# them as the server's user (root, often) before it forks, so the operator, not the tenant,
# decides which installed packages those are. Top-level names: the heavy frameworks a
# model server preloads, and what the CLI's deploy detects and the jobs preload by default.
DEFAULT_PRELOAD_ALLOW = (
    "torch", "torchvision", "torchaudio", "numpy", "scipy", "pandas", "sklearn", "transformers",
    "tokenizers", "safetensors", "accelerate", "huggingface_hub", "sentence_transformers",
    "onnxruntime", "PIL",
)


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int = 0  # the Open Inference Protocol over gRPC; 0: off
    admin_key: str = ""
    database_url: str = ""  # empty: SQLite in the data dir
    max_body_bytes: int = 64 * 1024 * 1024
    max_bundle_bytes: int = 512 * 1024 * 1024
    max_blob_bytes: int = 256 * 1024**3  # one model file
    max_json_depth: int = 64  # nesting of a JSON body; 0: unchecked
    max_header_bytes: int = 64 * 1024  # a request's line and headers
    header_timeout_s: float = 10.0  # to receive a request's headers
    body_timeout_s: float = 30.0  # the longest gap while receiving a request's body
    memory_budget_mb: int = 0  # replicas of this host together; 0: no budget
    init_timeout_s: float = 300.0
    heartbeat_timeout_s: float = 15.0
    tick_s: float = 1.0
    max_backoff_s: float = 300.0
    # After SIGTERM: how long requests are still served, with /readyz at 503, for a load
    # balancer to notice before the server stops accepting them.
    drain_grace_s: float = 5.0
    # How long per-request usage records are kept before they are rolled up into per-minute
    # sums (kept for good) and deleted; 0: kept for good too.
    usage_retention_s: float = 7 * 86_400.0
    # Top-level modules a ``preload`` may name (``$STRATUS_PRELOAD_ALLOW``).
    preload_allow: tuple[str, ...] = DEFAULT_PRELOAD_ALLOW
    sections: dict[str, Any] = field(default_factory=dict)  # from the config file

    def section(self, name: str) -> dict[str, Any]:
        """One section of the config file, ``{}`` when it is absent."""
        found: dict[str, Any] = self.sections.get(name) or {}
        return found

    @property
    def queue_url(self) -> str:
        """Where async invocations queue: ``$STRATUS_QUEUE_URL``, else the config file's
        ``queue: redis://...`` (or ``queue: {url: ...}``); empty: the metadata store."""
        if os.environ.get(QUEUE_ENV):
            return os.environ[QUEUE_ENV]
        value = self.sections.get("queue") or ""
        if isinstance(value, dict):
            value = value.get("url") or ""
        if not isinstance(value, str):
            raise ValueError("the config file's 'queue' is a URL such as redis://127.0.0.1:6379/0")
        return value

    def check_preload(self, modules: Iterable[str]) -> None:
        """400 naming the first module of ``modules`` whose package is not in
        ``preload_allow``: nothing a tenant names is imported as the server's user unless
        the operator allowed it."""
        for module in modules:
            parts = module.split(".")
            if parts[0] not in self.preload_allow or "__main__" in parts \
                    or not all(part.isidentifier() for part in parts):
                raise BadRequest(
                    f"preload {module!r} is not allowed on this server: the zygote imports "
                    f"preloads as the server's user, so only packages the operator lists in "
                    f"{PRELOAD_ALLOW_ENV} may be preloaded (allowed: "
                    f"{', '.join(self.preload_allow)})")

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"


TUNABLE = ("max_body_bytes", "max_bundle_bytes", "max_blob_bytes", "memory_budget_mb",
           "init_timeout_s", "heartbeat_timeout_s", "tick_s", "max_backoff_s",
           "max_json_depth", "max_header_bytes", "header_timeout_s", "body_timeout_s",
           "drain_grace_s", "usage_retention_s")


def with_env_overrides(settings: Settings) -> Settings:
    """Limits and timings may be set as ``STRATUS_<FIELD>`` (e.g. ``STRATUS_MAX_BODY_BYTES``)."""
    changes: dict[str, Any] = {}
    for name in TUNABLE:
        raw = os.environ.get(f"STRATUS_{name.upper()}")
        if raw:
            kind = type(getattr(settings, name))
            try:
                changes[name] = kind(raw)
            except ValueError:
                raise ValueError(f"STRATUS_{name.upper()} must be a number, not {raw!r}") from None
    if os.environ.get(PRELOAD_ALLOW_ENV, "").strip():
        changes["preload_allow"] = parse_preload_allow(os.environ[PRELOAD_ALLOW_ENV])
    return replace(settings, **changes)


def parse_preload_allow(raw: str) -> tuple[str, ...]:
    """``STRATUS_PRELOAD_ALLOW``: comma-separated top-level module names, the whole list;
    ``default`` among them stands for ``DEFAULT_PRELOAD_ALLOW`` (``default,mypkg`` widens it)."""
    names: list[str] = []
    for name in (part.strip() for part in raw.split(",")):
        if not name:
            continue
        if name == "default":
            names.extend(DEFAULT_PRELOAD_ALLOW)
        elif not name.isidentifier():
            raise ValueError(f"{PRELOAD_ALLOW_ENV} lists top-level module names "
                             f"(torch, numpy, mypkg), not {name!r}")
        else:
            names.append(name)
    return tuple(dict.fromkeys(names))


def load_config_file(path: Path) -> dict[str, Any]:
    """The server's YAML config file: a mapping of known sections."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read the config file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"the config file {path} must be a mapping of sections")
    unknown = sorted(set(data) - set(CONFIG_SECTIONS))
    if unknown:
        raise ValueError(f"the config file {path} has unknown sections {unknown}; "
                         f"known: {', '.join(CONFIG_SECTIONS)}")
    return data


def with_config_file(settings: Settings, path: Path | None) -> Settings:
    """Sections from ``path``, else ``$STRATUS_CONFIG``, else ``<data-dir>/stratus.yaml``."""
    chosen = path or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    if chosen is None:
        default = settings.data_dir / "stratus.yaml"
        chosen = default if default.is_file() else None
    if chosen is None:
        return settings
    return replace(settings, sections=load_config_file(chosen))


def resolve_admin_key(data_dir: Path) -> tuple[str, Path | None]:
    """The bootstrap admin key: from the environment, else generated once into the data dir.

    Returns the key and, when it lives in a file, that file's path.
    """
    key = os.environ.get(ADMIN_KEY_ENV, "").strip()
    if key:
        return key, None
    path = data_dir / "admin.key"
    if path.is_file():
        return path.read_text().strip(), path
    data_dir.mkdir(parents=True, exist_ok=True)
    key = "sk-stratus-" + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key, path
