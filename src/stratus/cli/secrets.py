"""``stratus secrets set | ls | rm``: a namespace's secrets. Values go in and are never shown."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from stratus.cli.client import CliError
from stratus.cli.options import ApiKey, AsJson, Namespace, Server, make_client
from stratus.cli.terminal import make_console

app = typer.Typer(help="Secrets: set, list, remove. A deployment reads them as environment "
                       "variables (--secret ENV=NAME); their values are never shown.",
                  no_args_is_help=True)
out = make_console()
err = make_console(stderr=True)


def _read_value(value: str | None, from_file: Path | None) -> str:
    if value is not None and from_file is not None:
        raise CliError("give the value as VALUE or --from-file, not both")
    if value is not None:
        return value
    if from_file is not None:
        try:
            return from_file.read_text()
        except UnicodeDecodeError:
            raise CliError(f"{from_file} is not UTF-8 text; store binary data base64-encoded") \
                from None
        except OSError as exc:
            raise CliError(f"cannot read {from_file}: {exc.strerror}") from None
    if sys.stdin.isatty():
        entered: str = typer.prompt("value", hide_input=True)
        return entered
    text = sys.stdin.read()
    return text[:-1] if text.endswith("\n") else text  # what `echo value |` adds


@app.command("set")
def set_secret(
    name: Annotated[str, typer.Argument(help="Secret name")],
    value: Annotated[str | None, typer.Argument(
        help="The value; it shows in the process list and shell history, so prefer "
             "--from-file or stdin (one trailing newline dropped)")] = None,
    from_file: Annotated[Path | None, typer.Option(help="Read the value from this file, as is")] = None,
    server: Server = None,
    api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """Create or replace a secret. Replicas started from now on see the new value."""
    text = _read_value(value, from_file)
    with make_client(server, api_key, namespace) as client:
        response = client.request("PUT", f"/api/secrets/{name}", json={"value": text})
    err.print(f"secret {name} {'created' if response.status_code == 201 else 'updated'}")


@app.command("ls")
def list_secrets(as_json: AsJson = False, server: Server = None, api_key: ApiKey = None,
                 namespace: Namespace = None) -> None:
    """List the secrets: names and times, never values."""
    with make_client(server, api_key, namespace) as client:
        secrets: list[dict[str, Any]] = client.json("GET", "/api/secrets")["secrets"]
    if as_json:
        sys.stdout.write(json.dumps(secrets, indent=2) + "\n")
        return
    table = Table("NAME", "CREATED", "UPDATED")
    for secret in secrets:
        table.add_row(secret["name"], secret["created_at"], secret["updated_at"])
    out.print(table)


@app.command("rm")
def remove(
    name: Annotated[str, typer.Argument(help="Secret name")],
    server: Server = None,
    api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """Delete a secret; refused while a live deployment reads it."""
    with make_client(server, api_key, namespace) as client:
        client.json("DELETE", f"/api/secrets/{name}")
    err.print(f"deleted secret {name}")
