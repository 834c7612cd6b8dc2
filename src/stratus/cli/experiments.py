"""``stratus experiments create | ls | show | event | rm``: compare a deployment's revisions as
variants, on conversions and latency."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.table import Column, Table

from stratus.cli.client import CliError
from stratus.cli.options import ApiKey, AsJson, Namespace, Server, make_client
from stratus.cli.terminal import make_console

app = typer.Typer(help="Experiments: revisions compared on conversion and latency.",
                  no_args_is_help=True)
out = make_console()
err = make_console(stderr=True)

Name = Annotated[str, typer.Argument(help="Experiment name")]


def parse_assignments(values: list[str] | None, option: str) -> dict[str, int]:
    """``["control=1", "treatment=2"]`` -> ``{"control": 1, "treatment": 2}``, in order."""
    found: dict[str, int] = {}
    for value in values or []:
        name, sep, number = value.partition("=")
        name, number = name.strip(), number.strip().rstrip("%")
        if not sep or not name or not number.isdigit():
            raise CliError(f"{option} takes NAME=NUMBER, not {value!r}")
        if name in found:
            raise CliError(f"{option} names {name!r} twice")
        found[name] = int(number)
    return found


@app.command()
def create(
    name: Name,
    deployment: Annotated[str, typer.Option(help="The deployment whose revisions are compared")],
    variant: Annotated[list[str], typer.Option(help="NAME=REVISION; repeat, control first")],
    weight: Annotated[list[str] | None, typer.Option(
        help="NAME=PERCENT: set the deployment's traffic split; repeat")] = None,
    control: Annotated[str | None, typer.Option(help="The baseline variant [default: first]")] = None,
    sticky_header: Annotated[str | None, typer.Option(help="Sticky key from this header")] = None,
    sticky_field: Annotated[str | None, typer.Option(help="Sticky key from this JSON field")] = None,
    alpha: Annotated[float, typer.Option(help="Significance level")] = 0.05,
    server: Server = None,
    api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """Define an experiment: each variant is a revision of the deployment."""
    if sticky_header and sticky_field:
        raise CliError("give --sticky-header or --sticky-field, not both")
    body: dict[str, Any] = {"name": name, "deployment": deployment, "alpha": alpha,
                            "variants": parse_assignments(variant, "--variant")}
    if control:
        body["control"] = control
    if weight:
        body["traffic"] = parse_assignments(weight, "--weight")
    if sticky_header or sticky_field:
        body["sticky"] = {"header": sticky_header} if sticky_header else {"field": sticky_field}
    with make_client(server, api_key, namespace) as client:
        created = client.json("POST", "/api/experiments", json=body)
    variants = ", ".join(f"{v['name']}=r{v['revision']}"
                         + (" (control)" if v["name"] == created["control"] else "")
                         for v in created["variants"])
    err.print(f"experiment {name} on {deployment}: {variants}"
              + ("; traffic split set" if weight or sticky_header or sticky_field else ""))


@app.command("ls")
def list_experiments(server: Server = None, api_key: ApiKey = None,
                     namespace: Namespace = None) -> None:
    """List experiments."""
    with make_client(server, api_key, namespace) as client:
        found = client.json("GET", "/api/experiments")["experiments"]
    # A name stays whole, to be copied into the next command.
    table = Table(Column("NAME", no_wrap=True), "DEPLOYMENT", Column("VARIANTS", no_wrap=True),
                  "REQUESTS", "CONVERTED", "CREATED")
    for item in found:
        variants = "\n".join(f"{v}=r{rev}" + ("*" if v == item["control"] else "")
                             for v, rev in item["variants"].items())
        table.add_row(item["name"], item["deployment"], variants, str(item["requests"]),
                      str(item["conversions"]), item["created_at"][:10])
    out.print(table)


def _when(iso: str) -> str:
    return iso[:16].replace("T", " ")


def _number(value: float | None, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


@app.command()
def show(
    name: Name,
    as_json: AsJson = False,
    server: Server = None,
    api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """Per-variant requests, errors, latency and conversions, with significance verdicts."""
    with make_client(server, api_key, namespace) as client:
        data = client.json("GET", f"/api/experiments/{name}")
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    out.print(f"[bold]{data['name']}[/bold] on {data['deployment']} since "
              f"{_when(data['created_at'])}; control variant [bold]{data['control']}[/bold], "
              f"alpha {data['alpha']:g}")
    table = Table(Column("VARIANT", no_wrap=True), "REV", "REQUESTS", "ERRORS", "P50 ms",
                  "P95 ms", "CONVERTED", "RATE")
    for v in data["variants"]:
        table.add_row(v["name"], str(v["revision"]), str(v["requests"]),
                      f"{v['errors']} ({_number(v['error_ratio'], '.1%')})",
                      _number(v["p50_ms"], ".1f"), _number(v["p95_ms"], ".1f"),
                      str(v["conversions"]), _number(v["conversion_rate"], ".2%"))
    out.print(table)
    for v in data["variants"]:
        comparison = v["comparison"]
        if comparison is None:
            continue
        for aspect in ("conversion", "latency"):
            result = comparison[aspect]
            style = "bold green" if result["significant"] else "dim"
            out.print(f"{v['name']} {aspect}: [{style}]{result['verdict']}[/{style}] "
                      f"[dim]({result['test']})[/dim]", soft_wrap=True)


@app.command()
def event(
    name: Name,
    variant: Annotated[str | None, typer.Option(help="Credit this variant")] = None,
    revision: Annotated[int | None, typer.Option(help="Credit the variant of this revision")] = None,
    key: Annotated[str | None, typer.Option(help="Credit the variant this sticky key is assigned")]
    = None,
    count: Annotated[int, typer.Option(help="How many conversions", min=1, max=10_000)] = 1,
    server: Server = None,
    api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """Record conversions for one variant."""
    targets = {"variant": variant, "revision": revision, "key": key}
    given = {field: value for field, value in targets.items() if value is not None}
    if len(given) != 1:
        raise CliError("give exactly one of --variant, --revision or --key")
    with make_client(server, api_key, namespace) as client:
        result = client.json("POST", f"/api/experiments/{name}/events",
                             json={**given, "count": count}, expect=(202,))
    err.print(f"recorded {result['recorded']} conversion(s) in {name}")


@app.command("rm")
def remove(name: Name, server: Server = None, api_key: ApiKey = None,
           namespace: Namespace = None) -> None:
    """Delete an experiment (the deployment's traffic split stays as it is)."""
    with make_client(server, api_key, namespace) as client:
        client.json("DELETE", f"/api/experiments/{name}")
    err.print(f"deleted experiment {name}")
