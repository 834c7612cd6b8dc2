"""``stratus jobs schedule``: a training job at each tick of a cron schedule (continuous
training), made of the same options as ``stratus jobs run``."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

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
    entrypoint_of,
    job_body,
    upload_code,
)
from stratus.cli.options import ApiKey, AsJson, Namespace, Server, make_client
from stratus.cli.terminal import make_console

err = make_console(stderr=True)


def schedule(
    name: Annotated[str, typer.Argument(help="Schedule name")],
    target: Target,
    cron: Annotated[str, typer.Option(help='e.g. "0 3 * * *"; a 6th field is seconds')],
    timezone: Annotated[str, typer.Option(help="IANA time zone of the cron fields")] = "UTC",
    catch_up: Annotated[str, typer.Option(
        help="Ticks missed while the server was down: none, one or all")] = "one",
    directory: Directory = None,
    dataset: Datasets = None,
    param: Params = None,
    experiment: Experiment = None,
    memory: Memory = None,
    timeout: Timeout = None,
    threads: Threads = 1,
    preload: Preload = None,
    env: Env = None,
    model: Models = None,
    register: Register = None,
    stage: Stage = "staging",
    gate: Gate = None,
    gate_vs: GateVs = None,
    tolerance: Tolerance = 0.0,
    gate_dataset: GateDataset = None,
    gate_split: GateSplit = "test",
    deploy: Deploy = None,
    canary: Canary = None,
    as_json: AsJson = False,
    server: Server = None,
    api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """Run a function train(ctx) as a job at each tick of a cron schedule (continuous
    training), with the options of `jobs run` (but --version, --resume-from and --follow: each
    tick registers the next minor version). `stratus schedule ls` and `rm` manage it."""
    root, entrypoint = entrypoint_of(target, directory)
    job = job_body(JobOptions(
        datasets=dataset, params=param, experiment=experiment, memory=memory, timeout=timeout,
        threads=threads, preload=preload, env=env, models=model, register=register,
        stage=stage, gate=gate, gate_vs=gate_vs, tolerance=tolerance,
        gate_dataset=gate_dataset, gate_split=gate_split, deploy=deploy, canary=canary))
    with make_client(server, api_key, namespace) as client:
        job["code"] = upload_code(client, root, entrypoint)
        with err.status("importing the job's code"):
            made: dict[str, Any] = client.json("POST", "/api/schedules", json={
                "name": name, "cron": cron, "timezone": timezone, "catch_up": catch_up,
                "job": job})
    if as_json:
        sys.stdout.write(json.dumps(made, indent=2) + "\n")
        return
    err.print(f"schedule {name} created: each tick runs {entrypoint} as a job; next tick "
              f"{made['next_fire']}")
