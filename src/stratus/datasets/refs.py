"""Dataset names, versions and references (``iris@1``, ``iris`` for the latest): pure rules."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from stratus.errors import BadRequest

FORMATS = ("csv", "parquet")
_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise BadRequest(f"dataset name {name!r} must be lowercase letters, digits and dashes "
                         "(at most 63)")
    return name


def check_version(version: str) -> str:
    if not _VERSION.fullmatch(version):
        raise BadRequest(f"dataset version {version!r} must be letters, digits, '.', '_' and '-' "
                         "(at most 63, starting with a letter or digit), for example 1 or 2024-06")
    return version


def check_format(format: str) -> str:
    if format not in FORMATS:
        raise BadRequest(f"format {format!r} is not one of {', '.join(FORMATS)}")
    return format


def check_path(relative: str) -> str:
    """A file's place inside the version: relative, inside it, not hidden."""
    path = PurePosixPath(relative)
    if (not relative or path.is_absolute() or ".." in path.parts or relative.startswith(".")
            or "\\" in relative or "\x00" in relative):
        raise BadRequest(f"dataset file path {relative!r} must be relative and stay inside the "
                         "dataset")
    return relative


@dataclass(frozen=True)
class DatasetRef:
    """``name@version`` pins a version; ``name`` alone is the version pushed last."""

    name: str
    version: str | None = None

    @classmethod
    def parse(cls, text: str) -> DatasetRef:
        name, sep, version = text.strip().partition("@")
        check_name(name)
        if not sep:
            return cls(name)
        return cls(name, check_version(version))

    def __str__(self) -> str:
        return f"{self.name}@{self.version}" if self.version else self.name
