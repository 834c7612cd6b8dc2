"""``stratus models push | ls | show | promote | rm`` and ``stratus gc``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from stratus.cli.client import CliError
from stratus.cli.options import ApiKey, AsJson, Namespace, Server, make_client
from stratus.cli.terminal import make_console, size_text
from stratus.cli.upload import digest_of, size_of, upload
from stratus.errors import StratusError
from stratus.models.formats import PreparedModel, prepare

app = typer.Typer(help="The model registry: versions, stages, artifacts.", no_args_is_help=True)
out = make_console()
err = make_console(stderr=True)


def _pairs(values: list[str] | None, option: str, number: bool = False) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for value in values or []:
        key, sep, raw = value.partition("=")
        if not sep or not key:
            raise CliError(f"{option} takes KEY=VALUE, not {value!r}")
        if number:
            try:
                result[key] = float(raw)
            except ValueError:
                raise CliError(f"{option} {key}: {raw!r} is not a number") from None
        else:
            result[key] = raw
    return result


@app.command()
def push(
    name: Annotated[str, typer.Argument(help="Model name")],
    path: Annotated[Path, typer.Argument(help="A model file or directory")],
    version: Annotated[str, typer.Option(help="MAJOR.MINOR.PATCH")],
    stage: Annotated[str, typer.Option(help="dev, staging or production")] = "dev",
    framework: Annotated[str | None, typer.Option(help="e.g. pytorch, sklearn")] = None,
    task: Annotated[str | None, typer.Option(help="e.g. image-classification")] = None,
    signature: Annotated[str | None, typer.Option(help="Inputs/outputs, as JSON")] = None,
    param: Annotated[list[str] | None, typer.Option(help="Hyperparameter KEY=VALUE")] = None,
    metric: Annotated[list[str] | None, typer.Option(help="Metric KEY=NUMBER")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Tag KEY=VALUE")] = None,
    dataset: Annotated[str | None, typer.Option(help="Lineage: the training data")] = None,
    job: Annotated[str | None, typer.Option(help="Lineage: the training job")] = None,
    parent: Annotated[str | None, typer.Option(help="Lineage: the version this derives from")] = None,
    trust_pickle: Annotated[bool, typer.Option(help="Allow a pickle (it runs code on load)")] = False,
    server: Server = None,
    api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """Upload a model version: safetensors, a .pt state dict (converted), a transformers
    directory, a GGUF file (dequantised), ONNX, or a trusted pickle."""
    body: dict[str, Any] = {  # checked before a slow conversion, not after it
        "version": version, "stage": stage, "framework": framework,
        "task": task, "parameters": _pairs(param, "--param"),
        "metrics": _pairs(metric, "--metric", number=True), "tags": _pairs(tag, "--tag"),
        "lineage": {"dataset": dataset, "job": job, "parent": parent},
    }
    if signature is not None:
        try:
            body["signature"] = json.loads(signature)
        except ValueError as exc:
            raise CliError(f"--signature is not valid JSON: {exc}") from None
    if path.suffix.lower() == ".gguf" and path.is_file():
        err.print(f"importing {path.name}: transformers dequantises it to float32 safetensors "
                  "(about half a minute for a 100 MB file)")
    started = time.perf_counter()
    try:
        prepared = prepare(path, trust_pickle=trust_pickle)
    except StratusError as exc:
        raise CliError(exc.message) from None
    try:
        if prepared.meta.get("source_format") == "gguf":
            _report_import(prepared, time.perf_counter() - started)
        body.update(format=prepared.format, trusted_pickle=bool(prepared.meta.get("trusted_pickle")),
                    source_format=prepared.meta.get("source_format"))
        with make_client(server, api_key, namespace) as client:
            files = {}
            for relative, source in prepared.files.items():
                digest = digest_of(source, relative)
                upload(client, "blobs", source, digest, relative)
                files[relative] = {"sha256": digest, "size": size_of(source)}
            body["files"] = files
            record = client.json("POST", f"/api/models/{name}/versions", json=body)
    finally:
        prepared.cleanup()
    err.print(f"pushed {name}@{record['version']} ({record['format']}, "
              f"{size_text(record['size_bytes'])}) in stage {record['stage']}")


def _report_import(prepared: PreparedModel, seconds: float) -> None:
    meta = prepared.meta
    size = sum(size_of(source) for source in prepared.files.values())
    err.print(f"imported a {meta['gguf_architecture']} model ({meta['gguf_quantisation'] or 'unknown'}"
              f" quantisation) in {seconds:.1f} s: {len(prepared.files)} files, "
              f"{size / 2**20:.1f} MiB in float32"
              + ("" if meta["chat_template"] else "; the tokenizer has no chat template"))


@app.command("ls")
def list_models(server: Server = None, api_key: ApiKey = None, namespace: Namespace = None) -> None:
    """List models with their versions and stages."""
    with make_client(server, api_key, namespace) as client:
        models = client.json("GET", "/api/models")["models"]
    table = Table("MODEL", "LATEST", "VERSIONS", "STAGES")
    for model in models:
        stages = ", ".join(f"{stage}={version}" for stage, version in model["stages"].items())
        table.add_row(model["name"], str(model["latest"]), str(len(model["versions"])), stages)
    out.print(table)


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="NAME or NAME@VERSION")],
    as_json: AsJson = False,
    server: Server = None,
    api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """Show a model's versions, or one version's metadata."""
    model, _, version = name.partition("@")
    with make_client(server, api_key, namespace) as client:
        path = f"/api/models/{model}" + (f"/versions/{version}" if version else "")
        data = client.json("GET", path)
    if as_json or version:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    table = Table("VERSION", "STAGE", "FORMAT", "SIZE", "METRICS", "CREATED")
    for record in data["versions"]:
        metrics = ", ".join(f"{k}={v:g}" for k, v in record.get("metrics", {}).items())
        table.add_row(record["version"], record["stage"], record["format"],
                      size_text(record["size_bytes"]), metrics, record["created_at"][:19])
    out.print(table)


@app.command()
def promote(
    name: Annotated[str, typer.Argument(help="Model name")],
    version: Annotated[str, typer.Argument(help="Version")],
    stage: Annotated[str, typer.Option(help="dev, staging, production or archived")] = "production",
    server: Server = None,
    api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """Move a version to a stage; deployments that follow the stage roll out to it."""
    with make_client(server, api_key, namespace) as client:
        record = client.json("POST", f"/api/models/{name}/versions/{version}/promote",
                             json={"stage": stage})
    followed = record.get("deployments_updated") or []
    err.print(f"{name}@{version} is now in {record['stage']}"
              + (f"; rolling out to {', '.join(followed)}" if followed else ""))


@app.command("rm")
def remove(
    name: Annotated[str, typer.Argument(help="NAME@VERSION, or NAME for every version")],
    server: Server = None,
    api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """Delete a version (or a model); refused while a live deployment uses it."""
    model, _, version = name.partition("@")
    with make_client(server, api_key, namespace) as client:
        client.json("DELETE", f"/api/models/{model}" + (f"/versions/{version}" if version else ""))
    err.print(f"deleted {name}")


def gc(
    grace: Annotated[float, typer.Option(help="Keep blobs younger than this many seconds")] = 3600.0,
    server: Server = None,
    api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """Delete stored blobs that no model version, dataset version or revision references."""
    with make_client(server, api_key, namespace) as client:
        result = client.json("POST", "/api/gc", json={"grace_s": grace})
    err.print(f"removed {result['blobs_removed']} blob(s), freed {size_text(result['bytes_freed'])}")
