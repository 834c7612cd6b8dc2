"""Ray Serve driver shared by the Ray peers; runs inside ``bench/.venv-ray``, not ``.venv``.

It starts a private local Ray cluster, deploys one Serve application behind the HTTP
proxy on ``127.0.0.1:<port>``, then speaks a line protocol with the harness:

* it writes ``@@bench {"event": "ready"}`` on stdout once the application is running;
* on stdin, ``status`` answers ``@@bench {"event": "status", "replicas": {...}}`` with the
  deployment's replica counts by state (RUNNING, STARTING, STOPPING, ...);
* ``replicas APP`` answers ``@@bench {"event": "replicas", "items": [{"pid", "state"}]}``:
  each replica of the application's deployments, from the Serve controller's details;
* ``stop`` (or EOF on stdin, or SIGTERM) runs ``serve.shutdown()`` and ``ray.shutdown()``.

Everything else (Ray's own logging) goes to stderr, which the harness sends to a log file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network here: never phone home

import ray
from ray import serve
from ray.serve.schema import LoggingConfig

PREFIX = "@@bench "
# Access logs off (as for the Starlette ceiling); BENCH_RAY_LOG_LEVEL=INFO to debug Serve.
QUIET_LOGGING = LoggingConfig(
    enable_access_log=False, log_level=os.environ.get("BENCH_RAY_LOG_LEVEL", "WARNING")
)


def parse_args(description: str, **choices: tuple[str, ...]) -> argparse.Namespace:
    """The driver's options; each of ``choices`` is one more, required: ``--<name> <choice>``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True, help="Serve HTTP proxy port")
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count() or 1)
    for option, values in choices.items():
        parser.add_argument(f"--{option}", choices=values, required=True)
    return parser.parse_args()


def reply(message: dict[str, Any]) -> None:
    sys.stdout.write(PREFIX + json.dumps(message) + "\n")
    sys.stdout.flush()


def replica_states(app_name: str, deployment_name: str) -> dict[str, int]:
    app = serve.status().applications.get(app_name)
    if app is None or deployment_name not in app.deployments:
        return {}
    states = app.deployments[deployment_name].replica_states
    return {str(getattr(state, "value", state)): int(count) for state, count in states.items()}


def replica_pids(app_name: str) -> list[dict[str, Any]]:
    """The replicas of ``app_name`` with their worker pid and state, as the controller sees
    them (the dashboard's ``/api/serve/applications/``, without the dashboard)."""
    from ray.serve.context import _get_global_client

    controller = _get_global_client()._controller
    details = ray.get(controller.get_serve_instance_details.remote())
    app = details.get("applications", {}).get(app_name, {})
    return [
        {"pid": replica.get("pid"), "state": str(getattr(replica.get("state"), "value",
                                                         replica.get("state")))}
        for deployment in app.get("deployments", {}).values()
        for replica in deployment.get("replicas", [])
    ]


def _raise_exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def serve_forever(app: Any, app_name: str, deployment_name: str, args: argparse.Namespace,
                  more_apps: dict[str, Any] | None = None) -> None:
    """Run ``app`` on Serve until told to stop; always shuts Serve and Ray down.
    ``more_apps`` (name to app) run beside it, each under the route prefix ``/<name>``."""
    signal.signal(signal.SIGTERM, _raise_exit)
    temp_dir = tempfile.mkdtemp(prefix="ray-bench-")  # short path: Ray uses unix sockets
    try:
        ray.init(
            num_cpus=args.num_cpus,
            _node_ip_address="127.0.0.1",  # keep all of Ray's traffic on loopback
            include_dashboard=False,
            log_to_driver=False,
            logging_level="WARNING",
            _temp_dir=temp_dir,
        )
        serve.start(
            http_options={"host": "127.0.0.1", "port": args.port},
            logging_config=QUIET_LOGGING,
        )
        serve.run(app, name=app_name, route_prefix="/")
        for name, other in (more_apps or {}).items():
            serve.run(other, name=name, route_prefix=f"/{name}")
        reply({"event": "ready", "ray_version": ray.__version__})
        for line in sys.stdin:
            command = line.strip()
            if command == "status":
                reply({"event": "status", "replicas": replica_states(app_name, deployment_name)})
            elif command.startswith("replicas "):
                reply({"event": "replicas", "items": replica_pids(command.split(" ", 1)[1])})
            elif command == "stop":
                break
            elif command:
                reply({"event": "error", "message": f"unknown command {command!r}"})
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            shutil.rmtree(temp_dir, ignore_errors=True)
        reply({"event": "stopped"})
