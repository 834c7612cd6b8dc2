"""Packing a code directory for upload, with a spinner while it packs and a warning, naming
the largest files, when the bundle is bigger than code usually is."""

from __future__ import annotations

import os
from pathlib import Path

from rich.markup import escape

from stratus.cli.bundle import Bundle, build_bundle
from stratus.cli.client import CliError
from stratus.cli.terminal import make_console, size_text

console = make_console(stderr=True)
WARN_ENV = "STRATUS_BUNDLE_WARN_MIB"
DEFAULT_WARN_MIB = 50.0


def warn_limit() -> float:
    """Bytes above which a bundle draws a warning: $STRATUS_BUNDLE_WARN_MIB MiB (default 50)."""
    raw = os.environ.get(WARN_ENV, "")
    try:
        mib = float(raw) if raw else DEFAULT_WARN_MIB
    except ValueError:
        raise CliError(f"{WARN_ENV} must be a number of MiB, not {raw!r}") from None
    return mib * 2**20


def pack(root: Path) -> Bundle:
    with console.status(f"packing {root}"):
        bundle = build_bundle(root)
    limit = warn_limit()
    if len(bundle.data) > limit:
        largest = ", ".join(f"{escape(name)} ({size_text(size)})" for name, size in bundle.largest)
        console.print(
            f"[yellow]warning[/yellow]: the code bundle is {size_text(len(bundle.data))} "
            f"({bundle.files} files from {escape(str(root))}), above {size_text(limit)}; the "
            f"largest: {largest}. Model weights belong in the model store (`stratus models "
            f"push`); list what the deployment does not need in .stratusignore or .gitignore "
            f"(${WARN_ENV} sets the limit).", highlight=False)
    return bundle
