"""``stratus jobs``: run a training function as a job, list and show jobs, print their logs and
events, cancel them."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Column, Table

from stratus.cli.bundle import build_bundle
from stratus.cli.client import CliError
from stratus.cli.follow import follow_job
from stratus.cli.logs import logs_of
from stratus.cli.options import ApiKey, AsJson, Namespace, Server, make_client
from stratus.cli.upload import upload

app = typer.Typer(help="Training and evaluation jobs.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)
ENDED = ("succeeded", "failed", "cancelled")


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


@app.command("run")
def run(
    target: Annotated[str, typer.Argument(help="path/to/train.py:function taking ctx")],
    directory: Annotated[Path | None, typer.Option(
        "--dir", help="The code to upload [default: the file's directory]")] = None,
    dataset: Annotated[list[str] | None, typer.Option(
        help="A dataset the job reads, name@version (repeatable)")] = None,
    param: Annotated[list[str] | None, typer.Option(
        help="NAME=VALUE, in ctx.params; numbers and bools are typed (repeatable)")] = None,
    experiment: Annotated[str | None, typer.Option(help="Group this run with others")] = None,
    memory: Annotated[int | None, typer.Option(help="Memory limit, MB")] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds before the job is stopped")] = None,
    threads: Annotated[int, typer.Option(help="torch and BLAS threads")] = 1,
    preload: Annotated[list[str] | None, typer.Option(
        help="Module the zygote imports (repeatable) [default: torch]")] = None,
    env: Annotated[list[str] | None, typer.Option(help="KEY=VALUE (repeatable)")] = None,
    resume_from: Annotated[str | None, typer.Option(
        help="A job to continue: ctx.load_checkpoint() returns its latest checkpoint")] = None,
    model: Annotated[list[str] | None, typer.Option(
        help="A registry version the job loads with ctx.load_model, name@version (repeatable)")
    ] = None,
    register: Annotated[str | None, typer.Option(
        help="Register the saved model under this name if it passes the gate")] = None,
    version: Annotated[str | None, typer.Option(
        help="The registered version [default: the latest's next minor]")] = None,
    stage: Annotated[str, typer.Option(help="The registered version's stage")] = "staging",
    gate: Annotated[list[str] | None, typer.Option(
        help="A threshold the evaluation must meet, e.g. 'accuracy>=0.9' (repeatable)")] = None,
    gate_vs: Annotated[str | None, typer.Option(
        help="A stage (production): the new version must not do worse than its version")] = None,
    tolerance: Annotated[float, typer.Option(
        help="How much worse than --gate-vs a metric may be")] = 0.0,
    gate_dataset: Annotated[str | None, typer.Option(
        help="The dataset the model is evaluated on [default: the first --dataset]")] = None,
    gate_split: Annotated[str, typer.Option(help="The split it is evaluated on")] = "test",
    deploy: Annotated[str | None, typer.Option(
        help="Roll the registered version out to this deployment")] = None,
    canary: Annotated[int | None, typer.Option(
        help="...as a canary starting at this percent [default: switch once warm]")] = None,
    follow: Annotated[bool, typer.Option(
        "--follow", "-f", help="Show progress and the log until the job ends (Ctrl-C detaches)")
    ] = False,
    as_json: AsJson = False,
    server: Server = None,
    api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """Run a function train(ctx) as a job on the server."""
    root, entrypoint = entrypoint_of(target, directory)
    body: dict[str, Any] = {"params": dict(parse_param(p) for p in param or []),
                            "datasets": dataset or [], "experiment": experiment,
                            "memory_mb": memory, "timeout_s": timeout, "threads": threads,
                            "resume_from": resume_from, "models": model or []}
    if register is not None:
        body["register"] = {"name": register, "version": version, "stage": stage,
                            "gate": gate or [], "gate_vs": gate_vs, "tolerance": tolerance,
                            "dataset": gate_dataset, "split": gate_split,
                            "deploy": None if deploy is None else {"deployment": deploy,
                                                                   "canary": canary}}
    elif gate or gate_vs or deploy:
        raise CliError("--gate, --gate-vs and --deploy apply to a model registered with --register")
    if preload:
        body["preload"] = preload
    for pair in env or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--env takes KEY=VALUE, not {pair!r}")
        body.setdefault("env", {})[key] = value
    with make_client(server, api_key, namespace) as client:
        bundle = build_bundle(root)
        upload(client, "blobs", bundle.data, bundle.digest, "code bundle")
        body["code"] = {"bundle": bundle.digest, "entrypoint": entrypoint}
        with err.status("importing the job's code"):
            job: dict[str, Any] = client.json("POST", "/api/jobs", json=body)
    if as_json and not follow:
        sys.stdout.write(json.dumps(job, indent=2) + "\n")
        return
    err.print(f"job [bold]{job['id']}[/bold] {job['status']}"
              + (f" (experiment {experiment})" if experiment else ""))
    if not follow:
        return
    ended = follow_job(lambda: make_client(server, api_key, namespace), job["id"],
                       job.get("total_epochs"), err)
    if ended is not None and ended["status"] != "succeeded":
        raise CliError(f"job {job['id']} {ended['status']}: {ended.get('error') or ended['reason']}")


@app.command("evaluate")
def evaluate(
    model: Annotated[str, typer.Argument(help="name@version (or name@stage) to evaluate")],
    dataset: Annotated[str, typer.Option(help="The dataset, name@version")],
    split: Annotated[str, typer.Option(help="Its split to score on")] = "test",
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Wait and print the metrics")
                      ] = False,
    as_json: AsJson = False,
    server: Server = None,
    api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """Score a registered model version on a dataset's split (accuracy, precision, recall and
    F1, or MAE, RMSE and R²); the result is recorded on the version."""
    with make_client(server, api_key, namespace) as client:
        job: dict[str, Any] = client.json("POST", "/api/jobs/evaluate", json={
            "model": model, "dataset": dataset, "split": split})
    if not follow:
        if as_json:
            sys.stdout.write(json.dumps(job, indent=2) + "\n")
        else:
            err.print(f"evaluation job [bold]{job['id']}[/bold] {job['status']}")
        return
    ended = follow_job(lambda: make_client(server, api_key, namespace), job["id"], None, err)
    if ended is None:
        return
    if ended["status"] != "succeeded":
        raise CliError(f"job {job['id']} {ended['status']}: {ended.get('error') or ended['reason']}")
    evaluation = ended.get("evaluation") or {}
    if as_json:
        sys.stdout.write(json.dumps(evaluation, indent=2) + "\n")
        return
    table = Table("metric", Column("value", justify="right"),
                  title=f"{evaluation.get('model')} on {evaluation.get('dataset')} "
                        f"({evaluation.get('split')}, {evaluation.get('samples')} rows)")
    for name, value in (evaluation.get("metrics") or {}).items():
        table.add_row(name, f"{value:.4f}")
    out.print(table)


def _ago(moment: float | None) -> str:
    if not moment:
        return "-"
    return datetime.fromtimestamp(moment, UTC).strftime("%m-%d %H:%M:%S")


def _epoch(view: dict[str, Any]) -> str:
    if view.get("epoch") is None:
        return "-"
    total = view.get("total_epochs")
    return f"{view['epoch']}/{total}" if total else str(view["epoch"])


@app.command("ls")
def list_jobs(
    experiment: Annotated[str | None, typer.Option(help="Only this experiment's runs")] = None,
    status: Annotated[str | None, typer.Option(help="queued, running, succeeded, ...")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first")] = 50,
    as_json: AsJson = False,
    server: Server = None,
    api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """List jobs, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if experiment:
        params["experiment"] = experiment
    if status:
        params["status"] = status
    with make_client(server, api_key, namespace) as client:
        jobs: list[dict[str, Any]] = client.json("GET", "/api/jobs", params=params)["jobs"]
    if as_json:
        sys.stdout.write(json.dumps(jobs, indent=2) + "\n")
        return
    table = Table(Column("ID", no_wrap=True), "STATUS", "EXPERIMENT", "EPOCH", "LOSS",
                  Column("SUBMITTED (UTC)", no_wrap=True), "REASON")
    for view in jobs:
        loss = view.get("loss")
        table.add_row(view["id"], view["status"], view.get("experiment") or "-", _epoch(view),
                      "-" if loss is None else f"{loss:.4g}", _ago(view.get("submitted_at")),
                      view.get("reason") or "")
    out.print(table)


@app.command("show")
def show(
    job_id: Annotated[str, typer.Argument(help="Job id")],
    as_json: AsJson = False,
    server: Server = None,
    api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """Show a job: status, parameters, final metrics, its model and why it failed."""
    with make_client(server, api_key, namespace) as client:
        view: dict[str, Any] = client.json("GET", f"/api/jobs/{job_id}")
    if as_json:
        sys.stdout.write(json.dumps(view, indent=2) + "\n")
        return
    out.print(f"[bold]{view['id']}[/bold]  {view['status']}"
              + (f" ({view['reason']})" if view.get("reason") else "")
              + (f"  experiment {view['experiment']}" if view.get("experiment") else ""))
    code = view["spec"].get("code") or {}
    out.print(f"code: {code.get('entrypoint')} ({str(code.get('bundle'))[:12]}); epoch "
              f"{_epoch(view)}; submitted {_ago(view.get('submitted_at'))}, ended "
              f"{_ago(view.get('ended_at'))}")
    for title, values in (("params", view["params"]), ("metrics", view["metrics"])):
        if values:
            out.print(f"{title}: " + ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else
                                               f"{k}={v}" for k, v in sorted(values.items())))
    if view.get("model"):
        model = view["model"]
        out.print(f"model: {model['format']} ({model.get('framework')}), files "
                  + ", ".join(sorted(model["files"])))
    if view.get("error"):
        out.print(f"[red]error[/red]: {view['error']} (the traceback: stratus jobs logs {job_id})")


@app.command("logs")
def logs(
    job_id: Annotated[str, typer.Argument(help="Job id")],
    tail: Annotated[int, typer.Option(help="Lines from the end")] = 1000,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Until the job ends")] = False,
    as_json: AsJson = False,
    server: Server = None,
    api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """Print a job's log: its stdout, stderr (tracebacks) and ctx.logger."""
    with make_client(server, api_key, namespace) as client:
        logs_of(client, f"/api/jobs/{job_id}/logs", {"tail": tail}, follow, as_json)


@app.command("events")
def events(
    job_id: Annotated[str, typer.Argument(help="Job id")],
    as_json: AsJson = False,
    server: Server = None,
    api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """Print a job's events, the history its state is folded from."""
    with make_client(server, api_key, namespace) as client:
        found: list[dict[str, Any]] = client.json("GET", f"/api/jobs/{job_id}/events")["events"]
    if as_json:
        sys.stdout.write(json.dumps(found, indent=2) + "\n")
        return
    for event in found:
        moment = datetime.fromtimestamp(event["at"], UTC).strftime("%H:%M:%S.%f")[:-3]
        data = json.dumps(event["data"], separators=(",", ":"), sort_keys=True)
        sys.stdout.write(f"{event['seq']:>5} {moment} {event['type']:<16} {data}\n")


@app.command("cancel")
def cancel(
    job_id: Annotated[str, typer.Argument(help="Job id")],
    server: Server = None,
    api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """Cancel a queued or running job: its processes are killed."""
    with make_client(server, api_key, namespace) as client:
        view: dict[str, Any] = client.json("DELETE", f"/api/jobs/{job_id}")
    err.print(f"job {job_id} {view['status']}")
