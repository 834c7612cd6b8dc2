"""docs/configuration.md keeps up with the code: every server setting, config-file key,
deployment field, ``STRATUS_*`` variable and ``stratus serve`` option is in its table."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import types
import typing
from pathlib import Path

import typer
import typer.core
from pydantic import BaseModel

from stratus.cli.main import app
from stratus.config import TUNABLE, Settings
from stratus.cost import Prices
from stratus.jobs.request import JobsConfig
from stratus.observe.alert_rules import AlertsConfig
from stratus.observe.logs import LogConfig
from stratus.runtime.sandbox import SandboxConfig
from stratus.security.checkpoints import CheckpointPolicy
from stratus.security.quotas import NamespaceQuota, QuotasSection
from stratus.spec import DeploymentRequest
from stratus.store.plaincache import ArtifactsConfig
from stratus.telemetry.tracing import TracingConfig

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"
SOURCE = ROOT / "src" / "stratus"
# The config file's sections that are pydantic models; the rest are plain keys, read by hand.
SECTION_MODELS: tuple[type[BaseModel], ...] = (
    LogConfig, TracingConfig, AlertsConfig, Prices, QuotasSection, NamespaceQuota,
    SandboxConfig, JobsConfig, CheckpointPolicy, ArtifactsConfig)
_HEADING = re.compile(r"^(#+)\s+(.*)$")
_FIRST_CELL = re.compile(r"^\|\s*([^|]*)\|")
_NAME = re.compile(r"`([^`]+)`")
_ENV = re.compile(r"STRATUS_[A-Z0-9]+(?:_[A-Z0-9]+)*")


def tables_by_heading(text: str) -> dict[str, set[str]]:
    """Heading text -> the backticked names in the first column of the table rows under it
    (up to the next heading of any level)."""
    found: dict[str, set[str]] = {}
    names: set[str] = set()
    for line in text.splitlines():
        heading = _HEADING.match(line)
        if heading:
            names = found.setdefault(heading[2], set())
            continue
        cell = _FIRST_CELL.match(line)
        if cell:
            names.update(_NAME.findall(cell[1]))
    return found


def section_of(tables: dict[str, set[str]], model: type) -> set[str] | None:
    """The table under the heading that names ``model`` in backticks; None when none does."""
    for heading, names in tables.items():
        if f"`{model.__name__}`" in heading:
            return names
    return None


def nested_models(annotation: object) -> list[type[BaseModel]]:
    """The pydantic models inside a field's type: ``X | None``, ``list[X]``, ``dict[str, X]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is None and not isinstance(annotation, types.UnionType):
        return []
    return [model for arg in typing.get_args(annotation) for model in nested_models(arg)]


def reachable(roots: tuple[type[BaseModel], ...]) -> list[type[BaseModel]]:
    seen: list[type[BaseModel]] = []
    pending = list(roots)
    while pending:
        model = pending.pop()
        if model in seen:
            continue
        seen.append(model)
        for info in model.model_fields.values():
            pending.extend(nested_models(info.annotation))
    return seen


def declaring_class(model: type[BaseModel], field: str) -> type:
    """The class in ``model``'s bases that declares ``field``: ScalingFields, RuntimeFields..."""
    for klass in model.__mro__:
        if field in inspect.get_annotations(klass):
            return klass
    return model


def missing_model_fields(tables: dict[str, set[str]], roots: tuple[type[BaseModel], ...]) -> list[str]:
    missing: list[str] = []
    for model in reachable(roots):
        for name in model.model_fields:
            owner = declaring_class(model, name)
            names = section_of(tables, owner)
            if names is None:
                missing.append(f"no heading names `{owner.__name__}` (for {model.__name__}.{name})")
            elif name not in names:
                missing.append(f"`{name}` of {owner.__name__}")
    return sorted(set(missing))


def source_env_vars() -> set[str]:
    """Every ``STRATUS_*`` name the source reads: whole string literals (``os.environ.get(
    "STRATUS_URL")``, ``WARN_ENV = "STRATUS_..."``, ``envvar="STRATUS_..."``), and the
    ``STRATUS_<FIELD>`` that ``with_env_overrides`` forms from ``TUNABLE``."""
    names = {f"STRATUS_{field.upper()}" for field in TUNABLE}
    for path in SOURCE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and _ENV.fullmatch(node.value):
                names.add(node.value)
    return names


def serve_options() -> set[str]:
    command = typer.main.get_command(app)
    assert isinstance(command, typer.core.TyperGroup)
    serve = command.commands["serve"]
    return {opt for param in serve.params if isinstance(param, typer.core.TyperOption)
            for opt in param.opts if opt.startswith("--")}


def test_every_server_setting_is_in_its_table() -> None:
    tables = tables_by_heading(DOC.read_text())
    names = section_of(tables, Settings)
    assert names is not None, "docs/configuration.md has no heading naming `Settings`"
    missing = [field.name for field in dataclasses.fields(Settings) if field.name not in names]
    assert not missing, f"docs/configuration.md lacks server settings: {missing}"


def test_every_config_file_key_is_in_its_sections_table() -> None:
    missing = missing_model_fields(tables_by_heading(DOC.read_text()), SECTION_MODELS)
    assert not missing, "docs/configuration.md lacks config-file keys:\n" + "\n".join(missing)


def test_every_deployment_field_is_in_its_models_table() -> None:
    tables = tables_by_heading(DOC.read_text())
    missing = missing_model_fields(tables, (DeploymentRequest,))
    assert not missing, "docs/configuration.md lacks deployment fields:\n" + "\n".join(missing)


def test_every_environment_variable_is_documented() -> None:
    tables = tables_by_heading(DOC.read_text())
    documented = tables.get("Environment variables", set())
    missing = sorted(source_env_vars() - documented)
    assert not missing, f"docs/configuration.md's environment variables lack {missing}"


def test_every_serve_option_is_documented() -> None:
    tables = tables_by_heading(DOC.read_text())
    documented = tables.get("`stratus serve` options", set())
    missing = sorted(serve_options() - documented)
    assert not missing, f"docs/configuration.md's `stratus serve` options lack {missing}"


def test_the_walk_reaches_the_nested_models() -> None:
    """A walk that stopped at the top level would pass with half the doc missing."""
    names = {model.__name__ for model in reachable((DeploymentRequest,))}
    assert {"RetrySpec", "OutliersSpec", "SheddingSpec", "AsyncSpec", "Destination",
            "ScheduleSpec", "RolloutStrategy", "RolloutThresholdsSpec", "CodeRef"} <= names
    assert "STRATUS_DRAIN_GRACE_S" in source_env_vars()
    assert "--drain-grace" in serve_options()


def test_a_missing_row_is_named() -> None:
    text = DOC.read_text().replace("| `max_ejected_share` |", "| max_ejected_share |")
    missing = missing_model_fields(tables_by_heading(text), (DeploymentRequest,))
    assert missing == ["`max_ejected_share` of OutliersSpec"]
