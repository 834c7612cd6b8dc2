"""Options shared by every client command: where the server is and which key to use."""

from __future__ import annotations

from typing import Annotated

import typer

from stratus.cli.client import Client

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
