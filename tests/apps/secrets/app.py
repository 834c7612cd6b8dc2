"""Reports what a replica was given: environment variables (set from secrets), the digests of
its models' files as the replica reads them, and a marker that lives only in this bundle."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import stratus

BUNDLE_MARKER = "stratus-bundle-plaintext-marker-5b1e0c9a"


class Reveal:
    def __init__(self, ctx: stratus.Context) -> None:
        self.ctx = ctx
        self.files: dict[str, dict[str, str]] = {}
        for name in ctx.config.get("models", []):
            directory = ctx.model_path(name)
            self.files[name] = {}
            for file in sorted(os.listdir(directory)):
                path = os.path.join(directory, file)
                with open(path, "rb") as handle:
                    self.files[name][file] = hashlib.sha256(handle.read()).hexdigest()
                self.files[name][f"{file}:path"] = os.path.realpath(path)

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        names = request.get("env", [])
        return {
            "env": {name: os.environ.get(name) for name in names},
            "ctx_env": {name: self.ctx.env.get(name) for name in names},
            "files": self.files,
            "marker": BUNDLE_MARKER,
            "source": os.path.realpath(__file__),
            "pid": os.getpid(),
        }
