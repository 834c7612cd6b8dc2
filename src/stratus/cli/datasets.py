"""``stratus datasets push | ls | show | rm``: versions of CSV or Parquet data, uploaded as
blobs and parsed by the server."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from stratus.cli.client import CliError
from stratus.cli.options import ApiKey, AsJson, Namespace, Server, make_client
from stratus.cli.terminal import make_console, size_text
from stratus.cli.upload import digest_of, size_of, upload
from stratus.datasets.refs import FORMATS
from stratus.datasets.splits import parse_split
from stratus.errors import StratusError

app = typer.Typer(help="Datasets: versions of CSV or Parquet data, with schemas and splits.",
                  no_args_is_help=True)
out = make_console()
err = make_console(stderr=True)
SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def _skipped(relative: Path) -> bool:
    """Hidden files and markers such as Spark's ``_SUCCESS`` are not data."""
    return any(part.startswith((".", "_")) for part in relative.parts)


def collect(path: Path, format: str | None) -> tuple[str, dict[str, Path]]:
    """(the format, relative name -> file) of a file or of a directory's files of one format."""
    if path.is_file():
        found = {path.name: path}
    elif path.is_dir():
        found = {inside.as_posix(): file for file in sorted(path.rglob("*"))
                 if file.is_file() and not _skipped(inside := file.relative_to(path))}
        if not found:
            raise CliError(f"{path} holds no data files")
    else:
        raise CliError(f"{path} is neither a file nor a directory")
    if format is not None:
        if format not in FORMATS:
            raise CliError(f"--format is one of {', '.join(FORMATS)}, not {format!r}")
        return format, found
    formats = set()
    for relative in found:
        suffix = Path(relative).suffix.lower()
        if suffix not in SUFFIXES:
            raise CliError(f"{relative}: not .csv, .parquet or .pq; name the format with --format")
        formats.add(SUFFIXES[suffix])
    if len(formats) > 1:
        raise CliError(f"{path} mixes formats ({', '.join(sorted(formats))}); a version holds one")
    return formats.pop(), found


@app.command()
def push(
    name: Annotated[str, typer.Argument(help="Dataset name")],
    path: Annotated[Path, typer.Argument(help="A CSV or Parquet file, or a directory of them")],
    version: Annotated[str, typer.Option(help="The version, e.g. 1")],
    split: Annotated[str | None, typer.Option(help="Seeded split, e.g. train=0.8,test=0.2")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split")] = 0,
    format: Annotated[str | None, typer.Option(help="csv or parquet [default: by extension]")] = None,
    server: Server = None,
    api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """Upload a dataset version; the server infers its schema and records the split."""
    chosen, files = collect(path, format)
    body: dict[str, Any] = {"version": version, "format": chosen, "seed": seed, "split": None}
    if split is not None:
        try:
            body["split"] = parse_split(split)
        except StratusError as exc:
            raise CliError(exc.message) from None
    with make_client(server, api_key, namespace) as client:
        entries = {}
        for relative, source in files.items():
            digest = digest_of(source, relative)
            upload(client, "blobs", source, digest, relative)
            entries[relative] = {"sha256": digest, "size": size_of(source)}
        body["files"] = entries
        response = client.request("POST", f"/api/datasets/{name}/versions", json=body)
    record = response.json()
    sizes = (record.get("split") or {}).get("sizes") or {}
    splits = "; splits " + ", ".join(f"{k}={v}" for k, v in sizes.items()) if sizes else ""
    what = "already pushed with this content:" if response.status_code == 200 else "pushed"
    err.print(f"{what} {record['ref']} ({record['format']}, {record['rows']} rows, "
              f"{record['columns']} columns{splits})")


@app.command("ls")
def list_datasets(server: Server = None, api_key: ApiKey = None,
                  namespace: Namespace = None) -> None:
    """List datasets with their latest version."""
    with make_client(server, api_key, namespace) as client:
        found = client.json("GET", "/api/datasets")["datasets"]
    table = Table("DATASET", "LATEST", "VERSIONS", "FORMAT", "ROWS", "COLUMNS")
    for entry in found:
        table.add_row(entry["name"], entry["latest"], str(entry["versions"]), entry["format"],
                      str(entry["rows"]), str(entry["columns"]))
    out.print(table)


def _splits(split: dict[str, Any] | None) -> str:
    if not split:
        return ""
    return ", ".join(f"{k}={v}" for k, v in split["sizes"].items()) + f" (seed {split['seed']})"


def _print_version(data: dict[str, Any]) -> None:
    out.print(f"{data['ref']}: {data['format']}, {data['rows']} rows, "
              f"{size_text(data['size_bytes'])}, {len(data['files'])} file(s)")
    if data.get("split"):
        out.print(f"splits: {_splits(data['split'])}")
    columns = Table("COLUMN", "TYPE", "NULLS")
    for column in data["schema"]["columns"]:
        columns.add_row(column["name"], column["type"], str(column["nulls"]))
    out.print(columns)
    shown = data["preview"]
    names = [column["name"] for column in data["schema"]["columns"]]
    title = f"first rows of {shown['split']}" if shown["split"] else "first rows"
    rows = Table(*names, title=title)
    for row in shown["rows"]:
        rows.add_row(*("" if row.get(name) is None else str(row[name]) for name in names))
    out.print(rows)


@app.command()
def show(
    ref: Annotated[str, typer.Argument(help="NAME or NAME@VERSION")],
    split: Annotated[str | None, typer.Option(help="Preview this split")] = None,
    as_json: AsJson = False,
    server: Server = None,
    api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """A dataset's versions, or one version's schema, splits and first rows."""
    name, _, version = ref.partition("@")
    if split is not None and not version:
        raise CliError("--split previews one version: give NAME@VERSION")
    with make_client(server, api_key, namespace) as client:
        if version:
            data = client.json("GET", f"/api/datasets/{name}/versions/{version}",
                               params={"split": split} if split else None)
        else:
            data = client.json("GET", f"/api/datasets/{name}")
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    elif version:
        _print_version(data)
    else:
        table = Table("VERSION", "FORMAT", "ROWS", "COLUMNS", "SPLITS", "SIZE")
        for entry in data["versions"]:
            table.add_row(entry["version"], entry["format"], str(entry["rows"]),
                          str(entry["columns"]), _splits(entry["split"]), size_text(entry["size_bytes"]))
        out.print(table)


@app.command("rm")
def remove(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION, or NAME for every version")],
    server: Server = None,
    api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """Delete a dataset version, or a dataset; its blobs go at the next stratus gc."""
    name, _, version = ref.partition("@")
    with make_client(server, api_key, namespace) as client:
        client.json("DELETE", f"/api/datasets/{name}" + (f"/versions/{version}" if version else ""))
    err.print(f"deleted {ref}")
