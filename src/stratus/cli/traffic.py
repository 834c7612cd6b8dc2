"""``stratus revisions | traffic | rollout | rollback``: a deployment's revisions and how its
requests are split between them."""

from __future__ import annotations

import json
import re
import sys
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from stratus.cli.client import Client, CliError
from stratus.cli.judging import (
    ErrorRatio,
    MinErrors,
    MinRequests,
    P95MinDelta,
    P95Relative,
    Watch,
    Window,
    duration_option,
    judge_fields,
)
from stratus.cli.options import ApiKey, AsJson, Namespace, Server, make_client
from stratus.cli.terminal import make_console
from stratus.control.rollout import ACTIVE

out = make_console()
err = make_console(stderr=True)

Name = Annotated[str, typer.Argument(help="Deployment name")]
EVENTS_SHOWN = 5
_ASSIGNMENT = re.compile(r"^(\d+)=(\d+)%?$")


# -- parsing ---------------------------------------------------------------------------------
def parse_assignments(pairs: list[str]) -> dict[str, int]:
    """``["1=90", "2=10"]`` -> ``{"1": 90, "2": 10}``: whole percentages that sum to 100."""
    weights: dict[str, int] = {}
    for pair in pairs:
        match = _ASSIGNMENT.match(pair.strip())
        if match is None:
            raise typer.BadParameter(f"{pair!r} is not REV=WEIGHT, e.g. 2=10",
                                     param_hint="REV=WEIGHT")
        revision, weight = int(match[1]), int(match[2])
        if revision < 1 or weight > 100:
            raise typer.BadParameter(f"{pair!r}: revisions start at 1 and weights are 0..100",
                                     param_hint="REV=WEIGHT")
        if str(revision) in weights:
            raise typer.BadParameter(f"revision {revision} is given twice", param_hint="REV=WEIGHT")
        weights[str(revision)] = weight
    total = sum(weights.values())
    if weights and total != 100:
        raise typer.BadParameter(f"the weights sum to {total}, not 100", param_hint="REV=WEIGHT")
    return weights


def traffic_update(assignments: list[str], *, shadow: int | None, no_shadow: bool,
                   sticky_header: str | None, sticky_field: str | None,
                   no_sticky: bool) -> dict[str, Any]:
    """The ``PUT .../traffic`` body: only what was given, so the rest stays as it is."""
    if shadow is not None and no_shadow:
        raise typer.BadParameter("give --shadow REV or --no-shadow, not both", param_hint="--shadow")
    if sum((sticky_header is not None, sticky_field is not None, no_sticky)) > 1:
        raise typer.BadParameter("give one of --sticky-header, --sticky-field or --no-sticky",
                                 param_hint="--sticky-*")
    body: dict[str, Any] = {}
    if assignments:
        body["traffic"] = parse_assignments(assignments)
    if shadow is not None or no_shadow:
        body["shadow"] = shadow
    if sticky_header is not None:
        body["sticky"] = {"header": sticky_header}
    elif sticky_field is not None:
        body["sticky"] = {"field": sticky_field}
    elif no_sticky:
        body["sticky"] = None
    return body


# -- rendering -------------------------------------------------------------------------------
def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _when(value: Any) -> str:
    """An ISO timestamp or epoch seconds, in local time to the second."""
    if value is None:
        return "-"
    try:
        if isinstance(value, int | float):
            moment = datetime.fromtimestamp(value, UTC)
        else:
            moment = datetime.fromisoformat(str(value))
            if moment.tzinfo is None:  # the server keeps UTC; SQLite drops the offset
                moment = moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        return str(value)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _share(weight: int | None, shadow: bool) -> str:
    """``None`` is a revision outside the split; 0% is one that only pinned requests reach."""
    parts = [f"{weight}%"] if weight is not None else []
    if shadow:
        parts.append("shadow")
    return " + ".join(parts) or "-"


def _code(spec: dict[str, Any]) -> str:
    entrypoint = str(spec.get("entrypoint") or "-")
    bundle = str(spec.get("bundle") or "")
    return f"{entrypoint} @{bundle[:12]}" if bundle else entrypoint


def revisions_table(revisions: list[dict[str, Any]]) -> Table:
    table = Table("REV", "STATUS", "TRAFFIC", "CREATED", "CODE", "REASON")
    for item in revisions:
        weight = item.get("weight", 0) if item.get("routed") else None
        table.add_row(str(item["revision"]), item["status"],
                      _share(weight, bool(item.get("shadow"))), _when(item.get("created_at")),
                      _code(item.get("spec") or {}), item.get("reason") or "")
    return table


def describe_rollout(rollout: dict[str, Any]) -> str:
    plan = rollout["plan"]
    kind = "blue-green" if len(plan) == 1 else "canary " + " → ".join(f"{w}%" for w in plan)
    if rollout.get("watch_s"):
        kind += f", watched {rollout['watch_s']:g}s"
    line = (f"rollout {rollout['from']} → {rollout['to']} ({kind}): [bold]{rollout['state']}"
            f"[/bold], stage {rollout['stage'] + 1}/{len(plan)}, revision {rollout['to']} "
            f"at {rollout['weight']}%")
    if rollout.get("reason"):
        line += f": {rollout['reason']}"
    return line


def print_traffic(view: dict[str, Any]) -> None:
    weights: dict[str, int] = view.get("traffic") or {}
    stats: dict[str, dict[str, Any]] = view.get("revisions") or {}
    shadow = view.get("shadow")
    header = (f"[bold]{view['deployment']}[/bold]  stable {view.get('stable') or '-'}, "
              f"latest {view.get('latest') or '-'}")
    sticky = view.get("sticky")
    if sticky:
        source = ("header " + sticky["header"]) if sticky.get("header") else f"field {sticky['field']}"
        header += f"; sticky by {source}"
    out.print(header, highlight=False)
    table = Table("REV", "WEIGHT", "REQUESTS", "ERRORS", "P50 ms", "P95 ms")
    shown = {*weights, *stats, *([str(shadow)] if shadow is not None else [])}
    for revision in sorted(shown, key=int):
        row = stats.get(revision, {})
        table.add_row(revision, _share(weights.get(revision), str(shadow) == revision),
                      str(row.get("requests", 0)), str(row.get("errors", 0)),
                      _ms(row.get("p50_ms")), _ms(row.get("p95_ms")))
    out.print(table)
    last = view.get("rollout")
    if last:
        line = describe_rollout(last)
        out.print(line if last["state"] in ACTIVE else f"[dim]last {line}[/dim]", highlight=False)
    for event in (view.get("events") or [])[-EVENTS_SHOWN:]:
        out.print(f"[dim]{_when(event.get('at'))}[/dim]  {event['kind']}: {event['message']}",
                  highlight=False)


def _split(view: dict[str, Any]) -> str:
    routed = sorted((int(rev), weight) for rev, weight in (view.get("traffic") or {}).items()
                    if weight)
    return ", ".join(f"revision {rev} {weight}%" for rev, weight in routed) or "nothing"


# -- commands --------------------------------------------------------------------------------
def revisions(name: Name, as_json: AsJson = False, server: Server = None,
              api_key: ApiKey = None, namespace: Namespace = None) -> None:
    """List a deployment's revisions with their status and share of the traffic."""
    with make_client(server, api_key, namespace) as client:
        data: dict[str, Any] = client.json("GET", f"/api/deployments/{name}/revisions")
    if as_json:
        _print_json(data)
        return
    out.print(revisions_table(data["revisions"]))


def traffic(
    name: Name,
    assignments: Annotated[list[str] | None, typer.Argument(
        metavar="REV=WEIGHT", help="New split, e.g. 1=90 2=10 (sums to 100)")] = None,
    shadow: Annotated[int | None, typer.Option(
        help="Revision that gets a copy of every request; its answers are dropped", min=1)] = None,
    no_shadow: Annotated[bool, typer.Option("--no-shadow", help="Stop shadowing")] = False,
    sticky_header: Annotated[str | None, typer.Option(
        help="Assign each client by the md5 of this request header")] = None,
    sticky_field: Annotated[str | None, typer.Option(
        help="Assign each client by the md5 of this top-level JSON field")] = None,
    no_sticky: Annotated[bool, typer.Option("--no-sticky", help="Stop sticky assignment")] = False,
    as_json: AsJson = False,
    server: Server = None,
    api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """Show how a deployment's traffic is split, or change the split, shadow or stickiness."""
    body = traffic_update(assignments or [], shadow=shadow, no_shadow=no_shadow,
                          sticky_header=sticky_header, sticky_field=sticky_field,
                          no_sticky=no_sticky)
    with make_client(server, api_key, namespace) as client:
        if body:
            view = client.json("PUT", f"/api/deployments/{name}/traffic", json=body)
        else:
            view = client.json("GET", f"/api/deployments/{name}/traffic")
    if as_json:
        _print_json(view)
        return
    print_traffic(view)


# Four times a second: a stage or a watch shorter than the poll would go untold.
ROLLOUT_POLL_S = 0.25


def _await_rollout(client: Client, name: str, target: int, as_json: bool) -> dict[str, Any]:
    """Poll until the rollout ends, telling each change of stage; the last view."""
    seen: tuple[Any, ...] | None = None
    while True:
        view: dict[str, Any] = client.json("GET", f"/api/deployments/{name}/traffic")
        current = view.get("rollout")
        if current is None or current.get("to") != target:
            return view  # ended and cleared, or replaced by another rollout
        now = (current["state"], current["stage"], current["weight"])
        if now != seen and not as_json:
            err.print(describe_rollout(current), highlight=False)
        seen = now
        if current["state"] not in ACTIVE:
            return view
        time.sleep(ROLLOUT_POLL_S)


def _succeeded(view: dict[str, Any], target: int) -> bool:
    current = view.get("rollout")
    if current is not None and current.get("to") == target:
        return bool(current["state"] == "succeeded")
    return (view.get("traffic") or {}).get(str(target)) == 100


def _follow(client: Client, name: str, view: dict[str, Any], target: int | None,
            as_json: bool) -> None:
    """Print the view a rollout or rollback started with and, given its ``target``, follow
    it to its end; fails unless the target ends up with all the traffic."""
    if as_json and target is None:
        _print_json(view)
    elif not as_json:
        print_traffic(view)
    if target is None:
        return
    view = _await_rollout(client, name, target, as_json)
    if as_json:
        _print_json(view)  # one document: the view the rollout ended with
    if not _succeeded(view, target):
        state = (view.get("rollout") or {}).get("state", "ended")
        raise CliError(f"rollout of revision {target} {state}; traffic: {_split(view)}")
    err.print(f"[green]done[/green]: traffic to {_split(view)}", highlight=False)


def rollout(
    name: Name,
    to: Annotated[int, typer.Option("--to", help="Revision to roll out", min=1)],
    canary: Annotated[int | None, typer.Option(
        help="First weight of a gradual canary, percent [default: the deployment's rollout, "
             "blue-green unless its deploy asked for a canary]", min=1, max=100)] = None,
    step: Annotated[int | None, typer.Option(
        help="Canary weight step, percent [default: the deployment's, 25]", min=1, max=100)] = None,
    interval: Annotated[str | None, typer.Option(
        help="Time at each canary stage, e.g. 60s, 2m [default: the deployment's, 60s]")] = None,
    window: Window = None,
    watch: Watch = None,
    error_ratio_relative: ErrorRatio = None,
    min_errors: MinErrors = None,
    p95_relative: P95Relative = None,
    p95_min_delta_ms: P95MinDelta = None,
    min_requests: MinRequests = None,
    wait: Annotated[bool, typer.Option(
        "--wait", help="Follow the rollout until it ends, its watch included")] = False,
    as_json: AsJson = False,
    server: Server = None,
    api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """Move traffic to a revision: all at once when it is warm (blue-green), or step by step
    (--canary), then watch it; it rolls back by itself if its errors or p95 latency get worse.
    What is not given comes from the deployment's rollout settings."""
    body: dict[str, Any] = {"to": to}
    if canary is not None:
        body["canary"] = canary
    if step is not None:
        body["step"] = step
    if interval is not None:
        body["interval_s"] = duration_option(interval, "--interval")
    body.update(judge_fields(watch=watch, window=window, error_ratio_relative=error_ratio_relative,
                             min_errors=min_errors, p95_relative=p95_relative,
                             p95_min_delta_ms=p95_min_delta_ms, min_requests=min_requests))
    with make_client(server, api_key, namespace) as client:
        view = client.json("POST", f"/api/deployments/{name}/rollout", json=body)
        _follow(client, name, view, to if wait else None, as_json)


def rollback(
    name: Name,
    wait: Annotated[bool, typer.Option("--wait", help="Follow a switch back until it ends")] = False,
    as_json: AsJson = False,
    server: Server = None,
    api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """Stop the rollout in flight, or switch back to the previous stable revision."""
    with make_client(server, api_key, namespace) as client:
        view: dict[str, Any] = client.json("POST", f"/api/deployments/{name}/rollback", json={})
        current = view.get("rollout") or {}
        # Stopping a rollout in flight is done at once; a switch back to the previous stable
        # revision is a rollout of its own, made once that revision is warm.
        switching = current.get("state") in ACTIVE
        if not as_json:
            if switching:
                err.print(f"rolling {name} back to revision {current['to']}", highlight=False)
            else:
                err.print(f"rolled back {name}: traffic to {_split(view)}", highlight=False)
        _follow(client, name, view, int(current["to"]) if wait and switching else None, as_json)
