"""The options of a job that ``stratus jobs run`` and ``stratus jobs schedule`` share, the body
of ``POST /api/jobs`` they make of them, and the upload of the job's code."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from stratus.cli.client import Client, CliError
from stratus.cli.packing import pack
from stratus.cli.upload import upload

Target = Annotated[str, typer.Argument(help="path/to/train.py:function taking ctx")]
Directory = Annotated[Path | None, typer.Option(
    "--dir", help="The code to upload [default: the file's directory]")]
Datasets = Annotated[list[str] | None, typer.Option(
    "--dataset", help="A dataset the job reads, name@version, or name for the latest "
                      "(repeatable)")]
Params = Annotated[list[str] | None, typer.Option(
    "--param", help="NAME=VALUE, in ctx.params; numbers and bools are typed (repeatable)")]
Experiment = Annotated[str | None, typer.Option(help="Group this run with others")]
Memory = Annotated[int | None, typer.Option(help="Memory limit, MiB")]
Timeout = Annotated[float | None, typer.Option(help="Seconds before the job is stopped")]
Threads = Annotated[int, typer.Option(help="torch and BLAS threads")]
Preload = Annotated[list[str] | None, typer.Option(
    help="Module the zygote imports (repeatable) [default: torch]")]
Env = Annotated[list[str] | None, typer.Option(help="KEY=VALUE (repeatable)")]
Models = Annotated[list[str] | None, typer.Option(
    "--model", help="A registry version the job loads with ctx.load_model, name@version or "
                    "name@stage (repeatable)")]
Register = Annotated[str | None, typer.Option(
    help="Register the saved model under this name if it passes the gate")]
Version = Annotated[str | None, typer.Option(
    help="The registered version [default: the latest's next minor]")]
Stage = Annotated[str, typer.Option(help="The registered version's stage")]
Gate = Annotated[list[str] | None, typer.Option(
    help="A threshold the evaluation must meet, e.g. 'accuracy>=0.9' (repeatable)")]
GateVs = Annotated[str | None, typer.Option(
    help="A stage (production): the new version must not do worse than its version")]
Tolerance = Annotated[float, typer.Option(help="How much worse than --gate-vs a metric may be")]
GateDataset = Annotated[str | None, typer.Option(
    help="The dataset the model is evaluated on [default: the first --dataset]")]
GateSplit = Annotated[str, typer.Option(help="The split it is evaluated on")]
Deploy = Annotated[str | None, typer.Option(
    help="Roll the registered version out to this deployment")]
Canary = Annotated[int | None, typer.Option(
    help="...as a canary starting at this percent [default: switch once warm]")]


def parse_param(pair: str) -> tuple[str, Any]:
    """``k=v``: v as a JSON number, bool or null when it reads as one, else as a string."""
    key, sep, text = pair.partition("=")
    if not sep or not key:
        raise CliError(f"--param takes NAME=VALUE, not {pair!r}")
    try:
        value = json.loads(text)
    except ValueError:
        return key, text
    return key, value if value is None or isinstance(value, int | float | bool) else text


def entrypoint_of(target: str, directory: Path | None) -> tuple[Path, str]:
    """``path/train.py:train`` -> (the bundle's root, ``train.py:train`` relative to it)."""
    file_part, sep, function = target.rpartition(":")
    if not sep or not file_part.endswith(".py") or not function.isidentifier():
        raise CliError(f"{target!r} must look like path/to/train.py:function")
    source = Path(file_part).resolve()
    if not source.is_file():
        raise CliError(f"{file_part} does not exist")
    root = (directory or source.parent).resolve()
    if root not in source.parents:
        raise CliError(f"{file_part} is not inside --dir {root}")
    return root, f"{source.relative_to(root).as_posix()}:{function}"


@dataclass(frozen=True, slots=True)
class JobOptions:
    """What the command line says of a job, as given (None: not given)."""

    datasets: list[str] | None = None
    params: list[str] | None = None
    experiment: str | None = None
    memory: int | None = None
    timeout: float | None = None
    threads: int = 1
    preload: list[str] | None = None
    env: list[str] | None = None
    resume_from: str | None = None
    models: list[str] | None = None
    register: str | None = None
    version: str | None = None
    stage: str = "staging"
    gate: list[str] | None = None
    gate_vs: str | None = None
    tolerance: float = 0.0
    gate_dataset: str | None = None
    gate_split: str = "test"
    deploy: str | None = None
    canary: int | None = None


def job_body(options: JobOptions) -> dict[str, Any]:
    """The body of ``POST /api/jobs`` but its code (uploaded last: a bad option costs none)."""
    o = options
    if o.canary is not None and o.deploy is None:
        raise CliError("--canary applies to a model rolled out with --deploy")
    body: dict[str, Any] = {"params": dict(parse_param(p) for p in o.params or []),
                            "datasets": o.datasets or [], "experiment": o.experiment,
                            "memory_mb": o.memory, "timeout_s": o.timeout, "threads": o.threads,
                            "resume_from": o.resume_from, "models": o.models or []}
    if o.register is not None:
        body["register"] = {"name": o.register, "version": o.version, "stage": o.stage,
                            "gate": o.gate or [], "gate_vs": o.gate_vs, "tolerance": o.tolerance,
                            "dataset": o.gate_dataset, "split": o.gate_split,
                            "deploy": None if o.deploy is None else {"deployment": o.deploy,
                                                                     "canary": o.canary}}
    elif o.gate or o.gate_vs or o.deploy:
        raise CliError("--gate, --gate-vs and --deploy apply to a model registered with --register")
    if o.preload:
        body["preload"] = o.preload
    for pair in o.env or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--env takes KEY=VALUE, not {pair!r}")
        body.setdefault("env", {})[key] = value
    return body


def upload_code(client: Client, root: Path, entrypoint: str) -> dict[str, str]:
    """Bundle ``root``, upload it unless the server has it; the body's ``code``."""
    bundle = pack(root)
    upload(client, "blobs", bundle.data, bundle.digest, "code bundle")
    return {"bundle": bundle.digest, "entrypoint": entrypoint}

