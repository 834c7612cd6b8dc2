"""``stratus schedule create | ls | rm``: cron schedules that invoke a deployment (or, made by
``stratus jobs schedule``, submit a training job)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from stratus.cli.options import ApiKey, AsJson, Namespace, Server, make_client
from stratus.cli.triggers_common import err, json_argument, show

app = typer.Typer(help="Cron schedules: each tick is an async invocation of a deployment, or "
                       "a training job (made with `stratus jobs schedule`).",
                  no_args_is_help=True)


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Schedule name")],
    cron: Annotated[str, typer.Option(help='e.g. "*/5 * * * *"; a 6th field is seconds')],
    deployment: Annotated[str, typer.Option(help="The deployment to invoke")],
    payload: Annotated[str, typer.Option(help="JSON body of each invocation")] = "{}",
    timezone: Annotated[str, typer.Option(help="IANA time zone of the cron fields")] = "UTC",
    catch_up: Annotated[str, typer.Option(
        help="Ticks missed while the server was down: none, one or all")] = "one",
    server: Server = None,
    api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """Create a schedule."""
    body = {"name": name, "cron": cron, "deployment": deployment, "timezone": timezone,
            "catch_up": catch_up, "payload": json_argument("--payload", payload)}
    with make_client(server, api_key, namespace) as client:
        made: dict[str, Any] = client.json("POST", "/api/schedules", json=body)
    err.print(f"schedule {name} created; next tick {made['next_fire']}")


@app.command("ls")
def list_schedules(as_json: AsJson = False, server: Server = None, api_key: ApiKey = None,
                   namespace: Namespace = None) -> None:
    """List the schedules, with their last and next ticks."""
    with make_client(server, api_key, namespace) as client:
        rows: list[dict[str, Any]] = client.json("GET", "/api/schedules")["schedules"]
    if not as_json:
        rows = [{**row, "target": target_of(row)} for row in rows]
    show(rows, ["name", "cron", "timezone", "target", "catch_up", "last_fired_at", "next_fire"],
         as_json)


def target_of(schedule: dict[str, Any]) -> str:
    """What a tick runs: ``deployment NAME`` or ``job FILE:FUNCTION``."""
    if schedule.get("target") == "job":
        return f"job {((schedule.get('job') or {}).get('code') or {}).get('entrypoint')}"
    return f"deployment {schedule.get('deployment')}"


@app.command("rm")
def remove(name: Annotated[str, typer.Argument(help="Schedule name")], server: Server = None,
           api_key: ApiKey = None, namespace: Namespace = None) -> None:
    """Delete a schedule."""
    with make_client(server, api_key, namespace) as client:
        client.json("DELETE", f"/api/schedules/{name}")
    err.print(f"deleted schedule {name}")
