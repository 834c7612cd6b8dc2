"""Helpers the trigger commands share: JSON arguments, and printing a list as JSON or a table."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.table import Table

from stratus.cli.client import CliError
from stratus.cli.terminal import make_console

out = make_console()
err = make_console(stderr=True)


def json_argument(what: str, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CliError(f"{what} is not valid JSON: {exc}") from None


def pairs(what: str, items: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` options as a mapping."""
    found: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"{what} {item!r} is not KEY=VALUE")
        found[key] = value
    return found


def show(rows: list[dict[str, Any]], columns: list[str], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table(*(column.upper() for column in columns))
    for row in rows:
        table.add_row(*("" if row.get(c) is None else
                        json.dumps(row[c]) if isinstance(row[c], dict | list) else str(row[c])
                        for c in columns))
    out.print(table)
