"""``stratus workflow deploy | ls | run | show | executions | cancel | rm``: workflows of
deployments and their executions."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.tree import Tree

from stratus.cli.client import CliError
from stratus.cli.options import ApiKey, AsJson, Namespace, Server, json_argument, make_client
from stratus.cli.terminal import make_console

app = typer.Typer(help="Workflows: pipelines of deployments, defined in YAML or JSON.",
                  no_args_is_help=True)
out = make_console()
err = make_console(stderr=True)
COLORS = {"succeeded": "green", "failed": "red", "caught": "yellow", "running": "cyan",
          "cancelled": "magenta", "timed_out": "red"}


def _state(state: str) -> str:
    return f"[{COLORS.get(state, 'white')}]{state}[/]"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.1f} ms"


@app.command("deploy")
def deploy(
    path: Annotated[Path, typer.Argument(help="The workflow's YAML or JSON file")],
    server: Server = None, api_key: ApiKey = None, namespace: Namespace = None,
) -> None:
    """Deploy (create or replace) a workflow; each deployment it calls must exist."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    kind = "application/json" if path.suffix == ".json" else "application/yaml"
    with make_client(server, api_key, namespace) as client:
        info = client.json("POST", "/api/workflows", content=text,
                           headers={"content-type": kind})
    err.print(f"workflow {info['name']} {'created' if info['created'] else 'updated'} "
              f"({info['steps']} steps)")


@app.command("ls")
def list_workflows(as_json: AsJson = False, server: Server = None, api_key: ApiKey = None,
                   namespace: Namespace = None) -> None:
    """List the workflows."""
    with make_client(server, api_key, namespace) as client:
        rows: list[dict[str, Any]] = client.json("GET", "/api/workflows")["workflows"]
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table("NAME", "UPDATED")
    for row in rows:
        table.add_row(row["name"], datetime.fromtimestamp(row["updated_at"], UTC).isoformat(
            timespec="seconds"))
    out.print(table)


@app.command("run")
def run(
    name: Annotated[str, typer.Argument(help="Workflow name")],
    payload: Annotated[str, typer.Argument(help="Input JSON, @file, or - for stdin")] = "{}",
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the result")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait at most")] = 300.0,
    server: Server = None, api_key: ApiKey = None, namespace: Namespace = None,
) -> None:
    """Start an execution; with --wait, print its output (exit 1 if it did not succeed)."""
    payload = json_argument(payload, "input")
    query = f"?wait=true&timeout_s={timeout:g}" if wait else ""
    with make_client(server, api_key, namespace) as client:
        response = client.request("POST", f"/api/workflows/{name}/executions{query}",
                                  content=payload.encode(), expect=(200, 202),
                                  headers={"content-type": "application/json"})
    body = response.json()
    if response.status_code == 202:
        err.print(f"execution {body['id']} {body['status']}"
                  + (" (still running after the wait)" if wait else ""))
        sys.stdout.write(body["id"] + "\n")
        return
    err.print(f"execution {body['id']} {_state(body['status'])} in {body['duration_s']:.3f} s")
    if body["status"] != "succeeded":
        raise CliError(json.dumps(body.get("error")))
    sys.stdout.write(json.dumps(body["output"]) + "\n")


def steps_tree(view: dict[str, Any]) -> Tree:
    """The history as a tree: a parallel's branches and a map's elements under their step."""
    tree = Tree(f"[bold]{view['workflow']}[/bold] {view['id']} {_state(view['status'])}")
    nodes: dict[str, Tree] = {}
    for step in sorted(view["steps"], key=lambda s: [int(p) for p in s["key"].split("/")]):
        parts = step["key"].split("/")
        parent = tree
        if len(parts) > 1:
            owner = nodes.get("/".join(parts[:-2]))
            if owner is not None:
                group = "/".join(parts[:-1])
                if group not in nodes:
                    nodes[group] = owner.add(f"[dim]#{parts[-2]}[/dim]")
                parent = nodes[group]
        label = (f"{step['step']} [dim]{step['type']}[/dim] {_state(step['state'])} "
                 f"attempts {step['attempts']} {_ms(step['duration_ms'])}")
        if step.get("chosen"):
            label += f" -> {step['chosen']}"
        if step.get("error") and step["state"] != "succeeded":
            label += f" [red]{step['error'].get('type')}: {step['error'].get('message')}[/]"
        nodes[step["key"]] = parent.add(label)
    return tree


@app.command("show")
def show(
    execution_id: Annotated[str, typer.Argument(help="Execution id")],
    as_json: AsJson = False,
    server: Server = None, api_key: ApiKey = None, namespace: Namespace = None,
) -> None:
    """An execution: its status, output or error, and each step's state and timings."""
    with make_client(server, api_key, namespace) as client:
        view: dict[str, Any] = client.json("GET", f"/api/executions/{execution_id}")
    if as_json:
        sys.stdout.write(json.dumps(view, indent=2) + "\n")
        return
    out.print(steps_tree(view))
    if view["status"] == "succeeded":
        out.print(f"output: {json.dumps(view['output'])}", highlight=False)
    elif view.get("error"):
        out.print(f"[red]error[/red]: {json.dumps(view['error'])}", highlight=False)
    if view.get("duration_s") is not None:
        out.print(f"took {view['duration_s']:.3f} s")


@app.command("executions")
def executions(
    workflow: Annotated[str | None, typer.Option(help="Only this workflow's")] = None,
    status: Annotated[str | None, typer.Option(help="Only in this status")] = None,
    limit: Annotated[int, typer.Option(help="At most this many")] = 50,
    server: Server = None, api_key: ApiKey = None, namespace: Namespace = None,
) -> None:
    """List executions, newest first."""
    params: dict[str, Any] = {"limit": limit}
    params.update({k: v for k, v in (("workflow", workflow), ("status", status)) if v})
    with make_client(server, api_key, namespace) as client:
        rows = client.json("GET", "/api/executions", params=params)["executions"]
    table = Table("ID", "WORKFLOW", "STATUS", "DURATION")
    for row in rows:
        duration = row["duration_s"]
        table.add_row(row["id"], row["workflow"], _state(row["status"]),
                      "-" if duration is None else f"{duration:.3f} s")
    out.print(table)


@app.command("cancel")
def cancel(execution_id: Annotated[str, typer.Argument(help="Execution id")],
           server: Server = None, api_key: ApiKey = None, namespace: Namespace = None) -> None:
    """Cancel a running execution."""
    with make_client(server, api_key, namespace) as client:
        client.json("DELETE", f"/api/executions/{execution_id}")
    err.print(f"cancelled {execution_id}")


@app.command("rm")
def remove(name: Annotated[str, typer.Argument(help="Workflow name")],
           server: Server = None, api_key: ApiKey = None, namespace: Namespace = None) -> None:
    """Delete a workflow; running executions finish."""
    with make_client(server, api_key, namespace) as client:
        client.json("DELETE", f"/api/workflows/{name}")
    err.print(f"deleted workflow {name}")
