"""Options shared by every client command: where the server is and which key to use."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from stratus.cli.client import Client, CliError

Server = Annotated[
    str | None,
    typer.Option("--server", envvar="STRATUS_URL", help="Server URL [default: http://127.0.0.1:8000]"),
]
ApiKey = Annotated[
    str | None, typer.Option("--api-key", envvar="STRATUS_API_KEY", help="API key (Bearer)")
]
Namespace = Annotated[
    str | None, typer.Option("--namespace", envvar="STRATUS_NAMESPACE", help="Namespace (admins)")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the raw JSON")]


def make_client(server: str | None, api_key: str | None, namespace: str | None) -> Client:
    return Client(server, api_key, namespace)


def json_argument(text: str, what: str) -> str:
    """A JSON argument as given: inline, ``@file``, or ``-`` for stdin; checked to parse, so
    a typo fails here rather than as the server's 400."""
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        text = Path(text[1:]).read_text()
    try:
        json.loads(text)
    except ValueError as exc:
        raise CliError(f"{what} is not valid JSON: {exc}") from None
    return text
