"""`make demo` on a fresh clone says what it installs and how long that takes before pip's
quiet minutes begin (read from ``make -n``, which runs nothing)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("make") is None, reason="no make here")
def test_a_first_install_is_announced_with_its_duration(tmp_path: Path) -> None:
    planned = subprocess.run(["make", "-n", "demo", f"VENV={tmp_path / 'venv'}"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.splitlines()
    install = next(i for i, line in enumerate(planned) if "pip install --quiet -e" in line)
    said = "\n".join(line for line in planned[:install] if line.startswith("echo"))
    assert "creating the virtual environment" in said, planned
    assert "installing Stratus and its dependencies" in said and "minutes" in said, planned
