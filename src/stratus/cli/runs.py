"""``stratus runs compare``: jobs (runs of an experiment) side by side, their parameters and
final metrics, with the values that differ between them marked."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from stratus.cli.options import ApiKey, AsJson, Namespace, Server, make_client
from stratus.cli.terminal import make_console

app = typer.Typer(help="Runs (jobs) of experiments.", no_args_is_help=True)
out = make_console()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def comparison(views: list[dict[str, Any]]) -> list[tuple[str, list[str], bool]]:
    """Rows of (label, one cell per run, whether the runs differ), params then metrics."""
    rows: list[tuple[str, list[str], bool]] = []
    for label in ("status", "experiment"):
        cells = [_cell(view.get(label)) for view in views]
        rows.append((label, cells, len(set(cells)) > 1))
    for section in ("params", "metrics"):
        names = sorted({name for view in views for name in view[section]})
        for name in names:
            cells = [_cell(view[section].get(name)) for view in views]
            rows.append((f"{section[:-1] if section == 'params' else 'metric'} {name}", cells,
                         len(set(cells)) > 1))
    return rows


@app.command("compare")
def compare(
    job_ids: Annotated[list[str], typer.Argument(help="Two or more job ids")],
    as_json: AsJson = False,
    server: Server = None,
    api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """Show runs' parameters and final metrics side by side; differing rows in bold."""
    with make_client(server, api_key, namespace) as client:
        views = [client.json("GET", f"/api/jobs/{job_id}") for job_id in job_ids]
    rows = comparison(views)
    if as_json:
        sys.stdout.write(json.dumps({"runs": job_ids, "rows": [
            {"name": name, "values": cells, "differs": differs}
            for name, cells, differs in rows]}, indent=2) + "\n")
        return
    table = Table("", *job_ids)
    for name, cells, differs in rows:
        style = "bold" if differs else None
        table.add_row(name, *cells, style=style)
    out.print(table)
