"""``stratus source create | ls | rm``: external queues (Redis Streams) consumed into a
deployment, one async invocation per entry."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from stratus.cli.options import ApiKey, AsJson, Namespace, Server, make_client
from stratus.cli.triggers_common import err, show

app = typer.Typer(help="Sources: consume a Redis Stream into a deployment.",
                  no_args_is_help=True)


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Source name")],
    url: Annotated[str, typer.Option(help="redis://host:port/db")],
    stream: Annotated[str, typer.Option(help="Stream key")],
    deployment: Annotated[str, typer.Option(help="The deployment each entry invokes")],
    group: Annotated[str, typer.Option(help="Consumer group (made if missing)")] = "stratus",
    batch: Annotated[int, typer.Option(help="Entries in flight at once")] = 10,
    claim_idle_s: Annotated[float, typer.Option(
        help="Take over an entry pending this long with a dead consumer")] = 60.0,
    server: Server = None,
    api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """Create a Redis Stream source."""
    body = {"name": name, "kind": "redis-stream", "url": url, "stream": stream,
            "group": group, "deployment": deployment, "batch": batch,
            "claim_idle_s": claim_idle_s}
    with make_client(server, api_key, namespace) as client:
        client.json("POST", "/api/sources", json=body)
    err.print(f"source {name} created")


@app.command("ls")
def list_sources(as_json: AsJson = False, server: Server = None, api_key: ApiKey = None,
                 namespace: Namespace = None) -> None:
    """List the sources."""
    with make_client(server, api_key, namespace) as client:
        rows: list[dict[str, Any]] = client.json("GET", "/api/sources")["sources"]
    show(rows, ["name", "kind", "url", "stream", "group", "deployment"], as_json)


@app.command("rm")
def remove(name: Annotated[str, typer.Argument(help="Source name")], server: Server = None,
           api_key: ApiKey = None, namespace: Namespace = None) -> None:
    """Delete a source; its consumer group stays in Redis."""
    with make_client(server, api_key, namespace) as client:
        client.json("DELETE", f"/api/sources/{name}")
    err.print(f"deleted source {name}")
