"""``stratus invocations get | ls | cancel | watch`` and ``stratus dlq ls | redrive``: the
asynchronous invocations of a namespace and the dead letters of a deployment."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from stratus.cli.client import CliError
from stratus.cli.options import ApiKey, AsJson, Namespace, Server, make_client
from stratus.cli.terminal import make_console

app = typer.Typer(help="Asynchronous invocations: status, list, cancel, watch.",
                  no_args_is_help=True)
dlq = typer.Typer(help="A deployment's dead-letter queue: list, redrive.", no_args_is_help=True)
out = make_console()
err = make_console(stderr=True)
TERMINAL = ("succeeded", "failed", "dead", "cancelled")


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _table(views: list[dict[str, Any]]) -> Table:
    # Ids whole, whatever the terminal's width: they are what the other commands take.
    table = Table(Column("ID", no_wrap=True, min_width=28), "DEPLOYMENT", "STATUS", "ATTEMPTS",
                  "PRIORITY", "CREATED", Column("ERROR", overflow="ellipsis", no_wrap=True))
    for view in views:
        error = view.get("error") or {}
        table.add_row(view["id"], view["deployment"], view["status"],
                      f"{view['attempts']}/{view['max_attempts']}", str(view["priority"]),
                      _when(view["created_at"]), str(error.get("message", ""))[:60])
    return table


@app.command("get")
def get_invocation(invocation_id: Annotated[str, typer.Argument(help="Invocation id")],
                   server: Server = None, api_key: ApiKey = None,
                   namespace: Namespace = None) -> None:
    """Print an invocation: status, attempts, timestamps, progress, result or error."""
    with make_client(server, api_key, namespace) as client:
        view = client.json("GET", f"/api/invocations/{invocation_id}")
    out.print_json(json.dumps(view))


@app.command("ls")
def list_invocations(
    deployment: Annotated[str | None, typer.Option(help="Only this deployment's")] = None,
    status: Annotated[str | None, typer.Option(help="queued, running, succeeded, failed, "
                                                    "dead or cancelled")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first")] = 50,
    as_json: AsJson = False, server: Server = None, api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """List the namespace's invocations, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if deployment:
        params["deployment"] = deployment
    if status:
        params["status"] = status
    with make_client(server, api_key, namespace) as client:
        page = client.json("GET", "/api/invocations", params=params)
    if as_json:
        out.print_json(json.dumps(page))
        return
    out.print(_table(page["invocations"]))


@app.command("cancel")
def cancel_invocation(invocation_id: Annotated[str, typer.Argument(help="Invocation id")],
                      server: Server = None, api_key: ApiKey = None,
                      namespace: Namespace = None) -> None:
    """Cancel a queued or running invocation (a running one's replica is told to stop)."""
    with make_client(server, api_key, namespace) as client:
        view = client.json("DELETE", f"/api/invocations/{invocation_id}")
    err.print(f"{invocation_id}: {view['status']}")


@app.command("watch")
def watch_invocation(
    invocation_id: Annotated[str, typer.Argument(help="Invocation id")],
    interval: Annotated[float, typer.Option(help="Seconds between polls")] = 0.5,
    server: Server = None, api_key: ApiKey = None, namespace: Namespace = None,
) -> None:
    """Follow an invocation with a progress bar until it ends; print its result or error."""
    with make_client(server, api_key, namespace) as client, Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(), console=err, disable=not err.is_terminal) as bar:
        task = bar.add_task("queued", total=1.0)
        while True:
            view = client.json("GET", f"/api/invocations/{invocation_id}")
            progress = view.get("progress") or {}
            label = view["status"]
            if progress.get("message"):
                label += f": {progress['message']}"
            done = 1.0 if view["status"] == "succeeded" else progress.get("fraction") or 0.0
            bar.update(task, completed=done, description=label)
            if view["status"] in TERMINAL:
                break
            time.sleep(interval)
    if view["status"] == "succeeded":
        out.print_json(json.dumps(view.get("result")))
        return
    error = view.get("error") or {}
    raise CliError(f"{view['status']}: {error.get('type', '')} {error.get('message', '')}".strip())


@dlq.command("ls")
def list_dead_letters(name: Annotated[str, typer.Argument(help="Deployment name")],
                      as_json: AsJson = False, server: Server = None, api_key: ApiKey = None,
                      namespace: Namespace = None) -> None:
    """The deployment's dead-lettered invocations, newest first."""
    with make_client(server, api_key, namespace) as client:
        page = client.json("GET", f"/api/deployments/{name}/dlq", params={"limit": 500})
    if as_json:
        out.print_json(json.dumps(page))
        return
    out.print(_table(page["invocations"]))


@dlq.command("redrive")
def redrive(name: Annotated[str, typer.Argument(help="Deployment name")],
            ids: Annotated[list[str] | None, typer.Argument(help="Ids; none: all")] = None,
            server: Server = None, api_key: ApiKey = None, namespace: Namespace = None) -> None:
    """Queue dead-lettered invocations again, attempts reset."""
    with make_client(server, api_key, namespace) as client:
        moved = client.json("POST", f"/api/deployments/{name}/dlq/redrive",
                            json={"ids": ids or None})["redriven"]
    err.print(f"redriven: {len(moved)}")
    for invocation_id in moved:
        out.print(invocation_id)
