"""``stratus jobs``: run a training function as a job, list and show jobs, print their logs and
events, cancel them. (``jobs schedule`` is in ``job_schedule.py``.)"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Column, Table

from stratus.cli.client import CliError
from stratus.cli.follow import follow_job
from stratus.cli.job_options import (
    Canary,
    Datasets,
    Deploy,
    Directory,
    Env,
    Experiment,
    Gate,
    GateDataset,
    GateSplit,
    GateVs,
    JobOptions,
    Memory,
    Models,
    Params,
    Preload,
    Register,
    Stage,
    Target,
    Threads,
    Timeout,
    Tolerance,
    Version,
    entrypoint_of,
    job_body,
    upload_code,
)
from stratus.cli.logs import logs_of
from stratus.cli.options import ApiKey, AsJson, Namespace, Server, make_client
from stratus.cli.terminal import make_console

app = typer.Typer(help="Training and evaluation jobs.", no_args_is_help=True)
out = make_console()
err = make_console(stderr=True)
ENDED = ("succeeded", "failed", "cancelled")


@app.command("run")
def run(
    target: Target,
    directory: Directory = None,
    dataset: Datasets = None,
    param: Params = None,
    experiment: Experiment = None,
    memory: Memory = None,
    timeout: Timeout = None,
    threads: Threads = 1,
    preload: Preload = None,
    env: Env = None,
    resume_from: Annotated[str | None, typer.Option(
        help="A job to continue: ctx.load_checkpoint() returns its latest checkpoint")] = None,
    model: Models = None,
    register: Register = None,
    version: Version = None,
    stage: Stage = "staging",
    gate: Gate = None,
    gate_vs: GateVs = None,
    tolerance: Tolerance = 0.0,
    gate_dataset: GateDataset = None,
    gate_split: GateSplit = "test",
    deploy: Deploy = None,
    canary: Canary = None,
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
    body = job_body(JobOptions(
        datasets=dataset, params=param, experiment=experiment, memory=memory, timeout=timeout,
        threads=threads, preload=preload, env=env, resume_from=resume_from, models=model,
        register=register, version=version, stage=stage, gate=gate, gate_vs=gate_vs,
        tolerance=tolerance, gate_dataset=gate_dataset, gate_split=gate_split, deploy=deploy,
        canary=canary))
    with make_client(server, api_key, namespace) as client:
        body["code"] = upload_code(client, root, entrypoint)
        with err.status("importing the job's code"):
            job: dict[str, Any] = client.json("POST", "/api/jobs", json=body)
    if as_json and not follow:
        sys.stdout.write(json.dumps(job, indent=2) + "\n")
        return
    err.print(f"job [bold]{job['id']}[/bold] {job['status']}"
              + (f" (experiment {experiment})" if experiment else ""))
    if not follow:
        return
    _succeeded(follow_job(lambda: make_client(server, api_key, namespace), job["id"],
                          job.get("total_epochs"), err))


def _succeeded(ended: dict[str, Any] | None) -> dict[str, Any] | None:
    """The job a follow saw end (None: detached), or why it did not succeed as the error."""
    if ended is not None and ended["status"] != "succeeded":
        raise CliError(f"job {ended['id']} {ended['status']}: "
                       f"{ended.get('error') or ended['reason']}")
    return ended


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
    ended = _succeeded(follow_job(lambda: make_client(server, api_key, namespace), job["id"],
                                  None, err))
    if ended is None:
        return
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
        printed = logs_of(client, f"/api/jobs/{job_id}/logs", {"tail": tail}, follow, as_json)
    if not printed:
        err.print(f"no log lines yet for job {job_id}", highlight=False, markup=False)


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
