"""The source tree keeps the shape docs/architecture.md gives it: the layer order and acyclic
packages of pyproject.toml's import-linter contracts, small modules, each saying its role."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "src" / "stratus"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
MAX_LINES = 400


def lint_imports(config: Path, path: Path) -> subprocess.CompletedProcess[str]:
    """import-linter on the package under ``path``, with the contracts in ``config``."""
    env = {**os.environ, "PYTHONPATH": str(path)}
    return subprocess.run([str(LINT_IMPORTS), str(config), "--no-cache"],
                          cwd=path, env=env, capture_output=True, text=True, timeout=120)


def test_packages_import_only_from_lower_layers_and_never_in_a_cycle() -> None:
    result = lint_imports(ROOT / "pyproject.toml", ROOT / "src")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_every_package_has_a_place_in_the_layers() -> None:
    """A package left out of the contract would be checked by nobody: each child of
    ``stratus`` must stand in one layer."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c["layers"] for c in contracts["contracts"] if c["type"] == "layers")
    listed = {name.strip() for layer in layers for name in re.split(r"[|:]", layer)}
    children = {f"stratus.{path.stem}" for path in SOURCE.glob("*.py") if path.stem != "__init__"}
    children |= {f"stratus.{path.parent.name}" for path in SOURCE.glob("*/__init__.py")}
    assert children - listed == set(), "add these to pyproject.toml's layers"
    assert listed - children == set(), "pyproject.toml's layers name what does not exist"


PROBE_CONFIG = """
[tool.importlinter]
root_package = "probe"
exclude_type_checking_imports = false

[[tool.importlinter.contracts]]
name = "layers"
type = "layers"
layers = ["probe.high", "probe.low"]

[[tool.importlinter.contracts]]
name = "acyclic"
type = "acyclic_siblings"
ancestors = ["probe"]
"""


def _probe(tmp_path: Path, files: dict[str, str]) -> subprocess.CompletedProcess[str]:
    for name, text in {"probe/__init__.py": "", "probe/high/__init__.py": "",
                       "probe/low/__init__.py": "", **files}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "pyproject.toml").write_text(PROBE_CONFIG)
    return lint_imports(tmp_path / "pyproject.toml", tmp_path)


@pytest.mark.parametrize("source", [
    "def late() -> None:\n    from probe.high import views\n",
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from probe.high import views\n",
])
def test_an_upward_import_counts_wherever_it_hides(tmp_path: Path, source: str) -> None:
    """Moving an import into a function or under TYPE_CHECKING does not hide it."""
    result = _probe(tmp_path, {"probe/high/views.py": "", "probe/low/store.py": source})
    assert result.returncode != 0
    assert "layers BROKEN" in result.stdout
    assert "probe.low.store -> probe.high.views" in result.stdout


def test_a_cycle_between_two_modules_is_refused(tmp_path: Path) -> None:
    result = _probe(tmp_path, {
        "probe/low/a.py": "def f() -> None:\n    from probe.low import b\n",
        "probe/low/b.py": "from probe.low import a\n",
    })
    assert result.returncode != 0
    assert "acyclic BROKEN" in result.stdout


def _modules() -> list[Path]:
    return sorted(SOURCE.rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SOURCE)))
def test_each_module_is_small_and_opens_by_saying_its_role(path: Path) -> None:
    text = path.read_text()
    assert text.count("\n") <= MAX_LINES, f"{path.name} has over {MAX_LINES} lines: split it"
    assert ast.get_docstring(ast.parse(text)), f"{path.name} opens with no docstring"
