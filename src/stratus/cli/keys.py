"""``stratus keys create | ls | revoke``: API keys scoped to a namespace and a role."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from stratus.cli.client import CliError
from stratus.cli.options import ApiKey, AsJson, Server, make_client
from stratus.cli.terminal import make_console
from stratus.security.roles import Role
from stratus.spec import parse_duration

app = typer.Typer(help="API keys: create (shown once), list, revoke.", no_args_is_help=True)
out = make_console()
err = make_console(stderr=True)


@app.command()
def create(
    namespace: Annotated[str, typer.Option(help="The key's namespace; * for a global admin key")],
    role: Annotated[Role, typer.Option(help="admin, developer, invoker or viewer")],
    expires_in: Annotated[str | None, typer.Option(
        help="Lifetime like 90m, 12h or 30d [default: never expires]")] = None,
    description: Annotated[str, typer.Option(help="What the key is for")] = "",
    rate: Annotated[float | None, typer.Option(help="Rate limit, requests per second")] = None,
    priority: Annotated[str | None, typer.Option(
        help="low, normal or critical: under load shedding, the priority of the key's requests "
             "and the most X-Stratus-Priority may ask for [default: normal]")] = None,
    server: Server = None,
    api_key: ApiKey = None,
) -> None:
    """Create a key. Its details go to stderr; the key itself, shown only this once, is the
    last line on stdout."""
    body: dict[str, Any] = {"namespace": namespace, "role": role.value, "description": description}
    if expires_in is not None:
        try:
            body["expires_in_s"] = parse_duration(expires_in)
        except ValueError as exc:
            raise CliError(str(exc)) from None
    if rate is not None:
        body["rate_limit_rps"] = rate
    if priority is not None:
        body["priority"] = priority  # checked by the server: a bad one is its 400
    with make_client(server, api_key, None) as client:
        created = client.json("POST", "/api/keys", json=body)
    expiry = f", expires {created['expires_at']}" if created["expires_at"] else ""
    err.print(f"key {created['id']}: {created['role']} in {created['namespace']}, "
              f"{created['priority']} priority{expiry}. "
              "Store it now: it cannot be shown again.")
    print(created["key"])


@app.command("ls")
def list_keys(server: Server = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """List keys: their ids, scopes, priorities and states, never the secrets."""
    with make_client(server, api_key, None) as client:
        keys = client.json("GET", "/api/keys")["keys"]
    if as_json:
        print(json.dumps(keys, indent=2))
        return
    table = Table("ID", "NAMESPACE", "ROLE", "PRIORITY", "STATE", "EXPIRES", "CREATED BY",
                  "DESCRIPTION")
    for key in keys:
        table.add_row(key["id"], key["namespace"], key["role"], key["priority"], key["state"],
                      key["expires_at"] or "never", key["created_by"], key["description"])
    out.print(table)


@app.command()
def revoke(key_id: Annotated[str, typer.Argument(help="The key's id (sk_...)")],
           server: Server = None, api_key: ApiKey = None) -> None:
    """Revoke a key: it stops working at once on this server, within seconds on others."""
    with make_client(server, api_key, None) as client:
        client.json("DELETE", f"/api/keys/{key_id}")
    err.print(f"key {key_id} revoked")
