"""``stratus audit``: list the audit log's records, and verify its hash chain."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Column, Table

from stratus.cli.options import ApiKey, AsJson, Namespace, Server, make_client
from stratus.cli.terminal import make_console

app = typer.Typer(help="The audit log: who changed what, and who was turned away.",
                  no_args_is_help=True)
out = make_console()
TIME_HELP = "A duration ago (90s, 10m, 2h, 7d) or an ISO time"
_RESULT_STYLE = {"ok": "green", "denied": "yellow", "error": "red"}


def render(records: list[dict[str, Any]], title: str | None = None) -> Table:
    """Oldest first, as a log reads; times to the second in UTC."""
    table = Table(*(Column(h, no_wrap=True) for h in ("ID", "TIME (UTC)", "NAMESPACE", "ACTOR")),
                  Column("ACTION"), Column("TARGET", overflow="fold"),
                  *(Column(h, no_wrap=True) for h in ("SOURCE", "RESULT", "STATUS")),
                  box=box.SIMPLE_HEAD, pad_edge=False, title=title)
    for record in reversed(records):
        style = _RESULT_STYLE.get(record["result"], "")
        table.add_row(str(record["id"]), record["at"][:19].replace("T", " "),
                      record["namespace"] or "-", record["actor"], record["action"],
                      record["target"], record["source"],
                      f"[{style}]{record['result']}[/{style}]" if style else record["result"],
                      str(record["status"]))
    return table


@app.command("ls")
def list_records(
    since: Annotated[str | None, typer.Option(help=TIME_HELP)] = None,
    until: Annotated[str | None, typer.Option(help=TIME_HELP)] = None,
    actor: Annotated[str | None, typer.Option(help="Exactly this actor: bootstrap, key:<id>, "
                                                   "jwt:<subject>, anonymous")] = None,
    action: Annotated[str | None, typer.Option(
        help="This action or any below it (deployments matches deployments.traffic.put)")] = None,
    limit: Annotated[int, typer.Option(help="The newest this many", min=1, max=10_000)] = 100,
    as_json: AsJson = False,
    server: Server = None,
    api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """List audit records (a namespace admin sees its namespace; the global admin every one,
    or the one --namespace names)."""
    params: dict[str, Any] = {"limit": limit}
    for name, value in (("since", since), ("until", until), ("actor", actor), ("action", action)):
        if value is not None:
            params[name] = value
    with make_client(server, api_key, namespace) as client:
        found: dict[str, Any] = client.json("GET", "/api/audit", params=params)
    if as_json:
        sys.stdout.write(json.dumps(found, indent=2) + "\n")
        return
    out.print(render(found["records"]))


_FINDING = {"truncated": "truncated", "rewritten": "rewritten tail",
            "missing_checkpoint": "missing checkpoint", "forged_checkpoint": "forged checkpoint",
            "unknown_key": "unverifiable checkpoint"}


@app.command()
def verify(
    as_json: AsJson = False,
    server: Server = None,
    api_key: ApiKey = None,
) -> None:
    """Check the hash chain and its tail against the MAC'd checkpoints (global admin). Exit
    code 0 when intact; 1 when a record was edited or deleted, the tail was cut or rewritten,
    or a checkpoint is missing or forged."""
    with make_client(server, api_key, None) as client:
        verdict: dict[str, Any] = client.json("GET", "/api/audit/verify")
    if as_json:
        sys.stdout.write(json.dumps(verdict, indent=2) + "\n")
    elif verdict["ok"]:
        head = verdict["head"]
        where = f"; head {head['id']} {head['hash']}" if head else ""
        last = (verdict.get("checkpoints") or {}).get("last")
        anchored = f"; checkpoint {last['seq']} at record {last['id']}" if last else ""
        out.print(f"[green]intact[/green]: {verdict['records']} records{where}{anchored}",
                  highlight=False)
    else:
        if verdict["first_bad"] is not None:
            out.print(f"[red]broken[/red] at record {verdict['first_bad']}: {verdict['reason']}",
                      highlight=False)
            if verdict["record"] is not None:
                out.print(render([verdict["record"]], title="as stored now"))
        for finding in verdict.get("findings", []):
            label = _FINDING.get(finding["kind"], finding["kind"])
            out.print(f"[red]{label}[/red]: {finding['reason']}", highlight=False)
    if verdict["dropped"]:
        out.print(f"[yellow]{verdict['dropped']} records were dropped since the server started "
                  f"(the queue was full); the log says so in audit.dropped records[/yellow]",
                  highlight=False)
    if not verdict["ok"]:
        raise typer.Exit(1)
