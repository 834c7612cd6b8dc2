"""The deployment name ``stratus deploy`` sends: --name, else the manifest's or the
decorator's, else one derived from the file, settled before any code is packed."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from stratus.cli.client import CliError
from stratus.spec import NAME_PATTERN


def check_name(name: str, origin: str) -> str:
    if not re.match(NAME_PATTERN, name):
        raise CliError(f"{origin} {name!r} is not a valid deployment name: lowercase letters, "
                       "digits and '-', at most 63, starting and ending with a letter or digit")
    return name


def derived_name(source: Path) -> str | None:
    """``my_model.py`` -> ``my-model``; None when nothing valid is left of the stem."""
    name = re.sub(r"[^a-z0-9-]+", "-", source.stem.lower().replace("_", "-"))
    name = name.strip("-")[:63].strip("-")
    return name if re.match(NAME_PATTERN, name) else None


def declares_name(source: Path, attribute: str) -> bool:
    """Whether ``attribute`` in ``source`` is decorated ``@deployment(name=...)``: then the
    server takes the decorator's name, which only importing the code would tell."""
    try:
        tree = ast.parse(source.read_text(), filename=str(source))
    except (SyntaxError, UnicodeDecodeError):
        return False  # the server's import reports it
    for node in tree.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) \
                and node.name == attribute:
            return any(_names_deployment(decorator) for decorator in node.decorator_list)
    return False


def _names_deployment(decorator: ast.expr) -> bool:
    if not isinstance(decorator, ast.Call):
        return False
    function = decorator.func
    called = function.attr if isinstance(function, ast.Attribute) else \
        function.id if isinstance(function, ast.Name) else ""
    return called == "deployment" and any(k.arg == "name" for k in decorator.keywords)


def resolve_name(flag: str | None, declared: object, source: Path | None,
                 entrypoint: str | None) -> str | None:
    """The name to send, or None to let the server take the decorator's (or, for a built-in
    server, its model's). Raises when a code deployment has no name to go by."""
    if flag is not None:
        return check_name(flag, "--name")
    if isinstance(declared, str):
        return check_name(declared, "the manifest's name")
    if source is None or entrypoint is None:
        return None  # --llm / --embeddings: the server names it after the model
    if declares_name(source, entrypoint.rpartition(":")[2]):
        return None
    name = derived_name(source)
    if name is None:
        raise CliError(f"no deployment name: cannot derive one from {source.name!r}; "
                       "pass --name NAME")
    return name
