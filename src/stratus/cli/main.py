"""The ``stratus`` command: ``serve`` runs the server; the rest talk to one over HTTP."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from stratus.cli import (
    audit,
    datasets,
    experiments,
    help_layout,
    invocations,
    job_schedule,
    jobs,
    keys,
    models,
    runs,
    schedules,
    secrets,
    sources,
    topics,
    workflows,
)
from stratus.cli.client import CliError
from stratus.cli.cost import cost
from stratus.cli.deploy import deploy
from stratus.cli.logs import logs
from stratus.cli.masterkey import rotate_master
from stratus.cli.options import ApiKey, AsJson, Namespace, Server, json_argument, make_client
from stratus.cli.simulate import simulate
from stratus.cli.terminal import make_console
from stratus.cli.traffic import revisions, rollback, rollout, traffic

app = typer.Typer(no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
out = make_console()
err = make_console(stderr=True)
DATABASE_HELP = "SQLAlchemy URL of the metadata store; default: SQLite in the data dir"

def print_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"stratus {version('stratus')}\n")
        raise typer.Exit()


app.command()(deploy)
app.command()(cost)
app.command()(logs)
app.add_typer(models.app, name="models")
app.add_typer(datasets.app, name="datasets")
app.add_typer(experiments.app, name="experiments")
app.add_typer(keys.app, name="keys")
keys.app.command("rotate-master")(rotate_master)
app.add_typer(secrets.app, name="secrets")
app.add_typer(audit.app, name="audit")
app.add_typer(invocations.app, name="invocations")
app.add_typer(invocations.dlq, name="dlq")
app.add_typer(schedules.app, name="schedule")
app.add_typer(topics.app, name="topic")
app.add_typer(sources.app, name="source")
app.add_typer(jobs.app, name="jobs")
jobs.app.command("schedule")(job_schedule.schedule)
app.add_typer(runs.app, name="runs")
app.add_typer(workflows.app, name="workflow")
app.command()(models.gc)
app.command()(simulate)
app.command()(revisions)
app.command()(traffic)
app.command()(rollout)
app.command()(rollback)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    grpc_port: Annotated[int, typer.Option(
        help="Port for gRPC (Open Inference Protocol v2, health, reflection); Triton uses "
             "8001 [default: off]", show_default=False)] = 0,
    data_dir: Annotated[Path, typer.Option(help="Metadata, artifacts and logs")] = Path(".stratus"),
    database_url: Annotated[str, typer.Option(envvar="STRATUS_DATABASE_URL", help=DATABASE_HELP)] = "",
    log_level: Annotated[str | None, typer.Option(
        help="debug, info, warning or error [default: logging.level of the config, else info]")] = None,
    config: Annotated[Path | None, typer.Option(
        help="YAML config file (sections: alerts, prices, tracing, logging, auth, quotas, "
             "sandbox, queue, jobs, tracking, audit; see docs/configuration.md); default "
             "$STRATUS_CONFIG or <data-dir>/stratus.yaml")] = None,
    drain_grace: Annotated[float | None, typer.Option(
        help="Seconds requests are still served after SIGTERM, with /readyz at 503, before "
             "the server drains and stops [default: $STRATUS_DRAIN_GRACE_S, else 5]",
        show_default=False)] = None,
    takeover: Annotated[bool, typer.Option(
        "--takeover", help="Upgrade the server running on --data-dir in place: it execs the "
                           "installed version, which adopts its replicas and connections; "
                           "waits until it serves")] = False,
) -> None:
    """Run the control plane and the gateway (SIGTERM drains gracefully; Ctrl+C twice forces;
    --takeover upgrades a running server without dropping a request)."""
    if takeover:
        from stratus.cli.takeover import request_takeover

        report = request_takeover(data_dir.resolve())
        err.print(f"took over: pid {report['pid']} serves with {report['replicas']} replicas and "
                  f"{report['connections']} connections adopted; nothing accepted for "
                  f"{report['paused_s'] * 1000:.0f} ms")
        return
    from stratus.runtime.allocator import tune_for_large_buffers

    tune_for_large_buffers()  # first, before any thread has an arena of its own
    import uvicorn

    from stratus.config import Settings, resolve_admin_key, with_config_file, with_env_overrides
    from stratus.gateway.drain import DrainingServer
    from stratus.gateway.protocol import guarded_protocol
    from stratus.gateway.takeover import inherited, listeners
    from stratus.observe.logs import setup_logging
    from stratus.server import create_app

    handed = inherited()  # this process is a takeover's exec: adopt what the last one left
    data_dir = data_dir.resolve()
    key, key_file = resolve_admin_key(data_dir)
    if key_file is not None:
        err.print(f"admin API key: {key_file}")
    settings = Settings(data_dir=data_dir, host=host, port=port, admin_key=key,
                        database_url=database_url, grpc_port=grpc_port)
    try:  # a bad STRATUS_<FIELD> is a usage error too, not a traceback
        settings = with_config_file(with_env_overrides(settings), config)
        if drain_grace is not None:
            settings = dataclasses.replace(settings, drain_grace_s=drain_grace)
        if settings.drain_grace_s < 0:
            raise ValueError("--drain-grace must be 0 or more seconds")
        logged = setup_logging(settings.section("logging"), settings.log_dir, log_level)
        application = create_app(settings, handed)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    # log_config=None: uvicorn's records go to the root logger's handlers set up above.
    protocol = guarded_protocol(settings.header_timeout_s, settings.body_timeout_s,
                                settings.max_header_bytes)  # httptools, with deadlines
    server_config = uvicorn.Config(application, host=host, port=port, loop="uvloop", http=protocol,
                                   access_log=False, log_level=logged.level.lower(),
                                   log_config=None, timeout_graceful_shutdown=30)
    server = DrainingServer(server_config, application, settings.drain_grace_s)
    server.inherited, server.run_dir = handed, settings.run_dir
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl+C twice: forced, nothing to add
        server.run(sockets=listeners(handed))
    if not server.started:  # as uvicorn.run: a lifespan or a bind that failed
        raise typer.Exit(3)


@app.command()
def invoke(
    name: Annotated[str, typer.Argument(help="Deployment name")],
    payload: Annotated[str, typer.Argument(help="JSON body, @file, or - for stdin")] = "{}",
    include: Annotated[bool, typer.Option("--include", "-i", help="Show response headers")] = False,
    run_async: Annotated[bool, typer.Option(
        "--async", help="Queue it and print its id (follow it with `stratus invocations "
                        "watch ID`)")] = False,
    idempotency_key: Annotated[str | None, typer.Option(
        help="A repeat with the same key returns the first call's id and result")] = None,
    priority: Annotated[int, typer.Option(help="With --async: higher runs first")] = 0,
    server: Server = None,
    api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """Invoke a deployment with a JSON payload and print what it returns."""
    payload = json_argument(payload, "payload")
    with make_client(server, api_key, namespace) as client:
        headers = {"content-type": "application/json"}
        if idempotency_key:
            headers["idempotency-key"] = idempotency_key
        if run_async:
            headers["prefer"] = "respond-async"
            headers["x-stratus-priority"] = str(priority)
        response = client.request("POST", f"/api/deployments/{name}/invoke",
                                  content=payload.encode(), headers=headers,
                                  expect=(200, 201, 202))
    if include:
        for header in ("x-request-id", "x-stratus-revision", "x-stratus-cold-start",
                       "x-stratus-invocation-id", "location"):
            err.print(f"[dim]{header}: {response.headers.get(header)}[/dim]")
    sys.stdout.write(response.text + ("\n" if not response.text.endswith("\n") else ""))


@app.command("ls")
def list_deployments(as_json: AsJson = False, server: Server = None, api_key: ApiKey = None,
                     namespace: Namespace = None) -> None:
    """List deployments."""
    with make_client(server, api_key, namespace) as client:
        answer: dict[str, Any] = client.json("GET", "/api/deployments")
    if as_json:
        sys.stdout.write(json.dumps(answer, indent=2) + "\n")
        return
    views: list[dict[str, Any]] = answer["deployments"]
    table = Table("NAME", "REVISION", "STATUS", "READY", "STARTING", "DRAINING", "MIN", "MAX")
    for view in views:
        replicas, scaling = view["replicas"], view["scaling"]
        table.add_row(view["name"], str(view["revision"]), view["status"],
                      str(replicas["ready"]), str(replicas["starting"]),
                      str(replicas["draining"]), str(scaling["min_replicas"]),
                      str(scaling["max_replicas"]))
    out.print(table)


@app.command()
def status(
    name: Annotated[str, typer.Argument(help="Deployment name")],
    as_json: AsJson = False,
    server: Server = None,
    api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """Show a deployment's revision, replicas, autoscaler decision and last error."""
    with make_client(server, api_key, namespace) as client:
        view: dict[str, Any] = client.json("GET", f"/api/deployments/{name}")
    if as_json:
        sys.stdout.write(json.dumps(view, indent=2) + "\n")
        return
    replicas = view["replicas"]
    out.print(f"[bold]{view['name']}[/bold]  revision {view['revision']} "
              f"(serving {view['serving_revision']})  status [bold]{view['status']}[/bold]"
              + (f": {view['reason']}" if view["reason"] else ""))
    out.print(f"replicas: {replicas['ready']} ready, {replicas['starting']} starting, "
              f"{replicas['draining']} draining; desired {replicas['desired']}; "
              f"queued {view['queued']}")
    scaler = view["autoscaler"]
    out.print(f"autoscaler: {scaler['policy']}, mode {scaler['mode']}: desired {scaler['desired']}, "
              f"ready {scaler['ready']} (target {scaler['target_concurrency']:g} per replica)")
    out.print(f"last decision: {scaler['reason']}")
    if replicas["items"]:
        table = Table("REPLICA", "REV", "STATE", "PID", "INFLIGHT", "INIT ms", "RSS MiB",
                      "OUTLIER")
        for item in replicas["items"]:
            outlier = item.get("outlier", "closed")
            if outlier != "closed":
                outlier += f" ({item['ejected_for_s']:g}s left: {item['ejected_because']})"
            table.add_row(item["id"], str(item["revision"]), item["state"], str(item["pid"]),
                          str(item["inflight"]), str(item["init_ms"]), str(item["rss_mb"]),
                          outlier)
        out.print(table)
    for number, state in (view.get("resilience") or {}).items():
        circuit, shedding = state["circuit"], state["shedding"]
        line = f"revision {number}: start-up circuit {circuit['state']}"
        if circuit["state"] != "closed":
            line += f" ({circuit['failures']} failed starts, next in {circuit['retry_in_s']:g}s)"
        if shedding is not None:
            line += (f"; adaptive limit {shedding['limit']} ({shedding['admitted']} admitted, "
                     f"{sum(shedding['shed'].values())} shed)")
        out.print(line)
    if view.get("last_error"):
        out.print(f"[red]last error[/red] ({view['last_error']['attempts']} attempts): "
                  f"{view['last_error']['message']}")


@app.command("rm")
def remove(
    name: Annotated[str, typer.Argument(help="Deployment name")],
    server: Server = None,
    api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """Delete a deployment: held requests fail, replicas drain and stop."""
    with make_client(server, api_key, namespace) as client:
        client.json("DELETE", f"/api/deployments/{name}")
    err.print(f"deleted {name}")


@app.callback()
def root(
    version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=print_version,
        help="Print the version of stratus and exit")] = False,
) -> None:
    """Stratus: serverless AI models."""


def main() -> None:
    command = typer.main.get_command(app)
    help_layout.install(command)  # one help layout for every command
    try:
        command(prog_name="stratus")
    except CliError as exc:
        err.print(f"[red]error[/red]: {escape(exc.message)}", highlight=False)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
