"""The operator's list of preloadable packages: what ``STRATUS_PRELOAD_ALLOW`` means, what a
``preload`` may name, and a default that covers every preload the platform itself asks for."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from stratus.cli.manifest import HEAVY_MODULES
from stratus.config import (
    DEFAULT_PRELOAD_ALLOW,
    PRELOAD_ALLOW_ENV,
    Settings,
    parse_preload_allow,
    with_env_overrides,
)
from stratus.errors import BadRequest
from stratus.jobs.request import DEFAULT_PRELOAD

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = Settings(data_dir=Path("/nonexistent"))


@pytest.mark.parametrize("modules", [
    [], ["torch"], ["numpy.random"], ["transformers", "torch"], ["sklearn.linear_model"]])
def test_allowed_packages_and_their_submodules_pass(modules: list[str]) -> None:
    SETTINGS.check_preload(modules)


@pytest.mark.parametrize("module", [
    "os", "json", "subprocess", "antigravity", "torchx", "numpy.__main__", "torch..x",
    "not a module", "", ".torch"])
def test_anything_else_is_a_400_naming_the_module_and_the_setting(module: str) -> None:
    with pytest.raises(BadRequest) as caught:
        SETTINGS.check_preload(["torch", module])
    assert f"preload {module!r} is not allowed" in caught.value.message
    assert PRELOAD_ALLOW_ENV in caught.value.message
    assert caught.value.status == 400 and caught.value.type == "invalid_request"


def test_the_variable_is_the_whole_list_and_default_stands_for_the_built_in_one() -> None:
    assert parse_preload_allow("torch, mypkg ,") == ("torch", "mypkg")
    assert parse_preload_allow("default,mypkg") == (*DEFAULT_PRELOAD_ALLOW, "mypkg")
    assert parse_preload_allow("torch,default") == DEFAULT_PRELOAD_ALLOW  # no duplicates
    with pytest.raises(ValueError, match=r"top-level module names.*'my\.pkg'"):
        parse_preload_allow("torch,my.pkg")


def test_the_environment_sets_it_and_an_empty_value_keeps_the_default(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PRELOAD_ALLOW_ENV, "default,json")
    widened = with_env_overrides(SETTINGS)
    widened.check_preload(["json", "torch"])
    monkeypatch.setenv(PRELOAD_ALLOW_ENV, "json")
    with pytest.raises(BadRequest, match="'torch'"):
        with_env_overrides(SETTINGS).check_preload(["torch"])
    monkeypatch.setenv(PRELOAD_ALLOW_ENV, " ")
    assert with_env_overrides(SETTINGS).preload_allow == DEFAULT_PRELOAD_ALLOW


def _literal_preloads() -> set[str]:
    """Every module the source, the examples and the benchmarks preload as a literal:
    ``preload=[...]``, ``{"preload": [...]}``, ``"--preload", "torch"``."""
    found: set[str] = set()
    paths = [*(ROOT / "src").rglob("*.py"), *(ROOT / "examples").rglob("*.py"),
             *(ROOT / "bench").rglob("*.py"), *(ROOT / "tests" / "integration").rglob("*.py")]
    for path in paths:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            values: list[ast.expr] = []
            if isinstance(node, ast.keyword) and node.arg == "preload":
                values = [node.value]
            elif isinstance(node, ast.Dict):
                values = [v for k, v in zip(node.keys, node.values, strict=True)
                          if isinstance(k, ast.Constant) and k.value == "preload"]
            elif isinstance(node, ast.Tuple | ast.List):
                values = [b for a, b in zip(node.elts, node.elts[1:], strict=False)
                          if isinstance(a, ast.Constant) and a.value == "--preload"]
            for value in values:
                if isinstance(value, ast.List | ast.Tuple):
                    found |= {e.value for e in value.elts if isinstance(e, ast.Constant)}
                elif isinstance(value, ast.Constant) and isinstance(value.value, str):
                    found.add(value.value)
    return found


def test_the_default_covers_what_the_platform_itself_preloads() -> None:
    """``stratus deploy`` preloads the heavy modules an entrypoint imports, jobs preload
    torch, the built-in servers torch and transformers: none of these may be refused."""
    preloads = _literal_preloads()
    assert {"torch", "transformers"} <= preloads, preloads  # the walk found them
    for modules in (HEAVY_MODULES, DEFAULT_PRELOAD, preloads):
        SETTINGS.check_preload(sorted(modules))
