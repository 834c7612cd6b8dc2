"""``stratus cost``: what a namespace spent, by group, against always-on capacity."""

from __future__ import annotations

import enum
import json
import sys
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Column, Table

from stratus.cli.options import ApiKey, AsJson, Namespace, Server, make_client
from stratus.cli.terminal import make_console

out = make_console()


class By(enum.StrEnum):
    namespace = "namespace"
    deployment = "deployment"
    revision = "revision"


def _money(amount: float) -> str:
    # Per-invocation prices are millionths of a dollar: keep the digits that say something.
    return f"{amount:.6f}" if abs(amount) < 100 else f"{amount:,.2f}"


def _name(group: dict[str, Any], by: By) -> str:
    if by is By.namespace:
        return str(group["namespace"])
    if by is By.deployment:
        return str(group["deployment"])
    return f"{group['deployment']} r{group['revision']}"


def cost(
    since: Annotated[str, typer.Option(help="A duration ago (90s, 10m, 2h, 7d) or an ISO time")] = "24h",
    by: Annotated[By, typer.Option(help="Group by namespace, deployment or revision")] = By.deployment,
    as_json: AsJson = False,
    server: Server = None,
    api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """Show usage and cost, and what always-on replicas at the observed peak would have cost."""
    with make_client(server, api_key, namespace) as client:
        report: dict[str, Any] = client.json("GET", "/api/usage",
                                             params={"since": since, "by": by.value})
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    out.print(render(report, by))
    jobs = report.get("jobs")
    if jobs and jobs["runs"]:
        out.print(job_line(jobs, report["currency"]))


def job_line(jobs: dict[str, Any], currency: str) -> str:
    """The jobs' own cost line, below the invocations' table."""
    return (f"jobs: {jobs['jobs']} run(s), {jobs['duration_s']:.1f} s, "
            f"{jobs['gb_seconds']:.3f} GB-s, {jobs['cpu_seconds']:.2f} CPU-s: "
            f"{currency} {_money(jobs['cost']['total'])}")


def render(report: dict[str, Any], by: By) -> Table:
    """One row per group and a total; tokens only when some were counted."""
    tokens = report["total"]["prompt_tokens"] + report["total"]["completion_tokens"] > 0
    # Amounts stay whole; in a narrow terminal a long name folds onto a second line.
    headers = [Column(by.value.upper(), overflow="fold"),
               *(Column(h, justify="right", no_wrap=True) for h in (
                   "REQUESTS", "GB-s", *(["TOKENS"] if tokens else []), "PEAK", "SERVERLESS",
                   "ALWAYS-ON", "SAVED"))]
    table = Table(*headers, box=box.SIMPLE_HEAD, pad_edge=False,
                  title=f"{report['currency']} since {report['since'][:19]} by {by.value}")
    rows = [(_name(group, by), group) for group in report["groups"]]
    for name, group in [*rows, ("total", report["total"])]:
        spent = group["cost"]
        used = [f"{group['prompt_tokens']}+{group['completion_tokens']}"] if tokens else []
        table.add_row(name, str(group["requests"]), f"{group['gb_seconds']:.3f}", *used,
                      str(group["peak_replicas"]), _money(spent["serverless"]),
                      _money(spent["always_on"]), _money(spent["saved"]),
                      end_section=bool(rows) and name == rows[-1][0])
    return table
