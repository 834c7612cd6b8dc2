"""gRPC inference (Open Inference Protocol v2): Stratus gRPC vs Stratus HTTP v2 (binary and
JSON tensors) vs Seldon MLServer 1.7 (gRPC and REST), serving the same models.

    .venv/bin/python bench/grpc.py [--quick] [--duration 10] [--warmup 2] [--concurrency 1,32]
        [--large-streams 1,2,4] [--large-json-streams 1] [--clients 2] [--replicas 1]
        [--payloads digits,images] [--only stratus-grpc,...] [--json]

Models: ``examples/digits`` (``pixels`` FP32 [1, 64] -> ``digit``, ``probabilities``) and a
large batch, ``images`` FP32 [64, 3, 224, 224] (38.5 MB) -> ``mean`` FP32 [64]
(``bench/handlers/tensor_model.py``: the handler costs milliseconds, the tensor's transport
is what is measured). Each target gets requests/s and latency at ``--concurrency`` streams
(digits) and ``--large-streams`` (the batch; JSON targets only at ``--large-json-streams``,
each call serialising ~200 MB of JSON). GB/s counts the tensor's bytes (38.5 MB a call)
whatever the encoding on the wire.

Load: ``bench/grpc_client.py`` processes (asyncio, plain ``grpc.aio`` calls or aiohttp POSTs
of a request tritonclient built once, many in flight), the streams split over ``--clients``
of them, one gRPC channel or HTTP connection pool each; their CPU seconds and the server's
(its whole process tree, from /proc) over the window are printed, as both share the cores.
Each model runs in ``--replicas`` inference processes on both servers (Stratus replicas,
MLServer's ``parallel_workers``). A target whose server does not answer (a ``stratus`` built
without issue 22's ``--grpc-port``) is skipped with the reason, the others still run.
MLServer runs in ``bench/.venv-mlserver`` (``bench/setup_mlserver_venv.sh``, made on first
use). Results: ``bench/results/grpc-<ts>.json`` and markdown tables (stderr with ``--json``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from common import WRK_SETTINGS, load_arguments, load_payload, log, parse_only, publish, timestamp
from grpc_load import TargetUnavailable, run_cell
from grpc_report import render
from grpc_targets import BASELINE, MODELS, TARGETS, Server, mlserver_peer, stratus_server

QUICK = {"duration": 2.0, "warmup": 1.0, "min_requests": 1}
SETTINGS = (*WRK_SETTINGS[:3], "large_streams", "large_json_streams", "clients", "batch", "min_requests",
            "max_window", "replicas", "quick")


def parse_args() -> argparse.Namespace:
    parser = load_arguments(__doc__, TARGETS, duration=10.0)
    parser.add_argument("--large-streams", default="1,2,4", help="stream counts for the large batch")
    parser.add_argument("--large-json-streams", default="1",
                        help="the same for JSON targets (each call is seconds of JSON); '' skips them")
    parser.add_argument("--payloads", default=",".join(MODELS), help="subset of " + ",".join(MODELS))
    parser.add_argument("--clients", type=int, default=2,
                        help="load-generator processes (at most one a stream)")
    parser.add_argument("--batch", type=int, default=64, help="images in the large batch")
    parser.add_argument("--min-requests", type=int, default=3,
                        help="a cell's window stretches past --duration until this many calls ended")
    parser.add_argument("--max-window", type=float, default=120.0, help="...for at most this many seconds")
    parser.add_argument("--replicas", type=int, default=1,
                        help="inference processes a model: Stratus replicas and MLServer's "
                             "parallel_workers (its default, 1)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a check that everything runs, not a measurement: {QUICK}")
    args = parser.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    args.targets = parse_only(args.only, TARGETS)
    args.payloads = parse_only(args.payloads, tuple(MODELS))

    def levels(text: str) -> list[int]:
        return [int(c) for c in text.split(",") if c.strip()]

    args.concurrency = levels(args.concurrency)
    args.large_streams = levels(args.large_streams)
    args.large_json_streams = levels(args.large_json_streams)
    return args


def stream_levels(payload: str, protocol: str, args: argparse.Namespace) -> list[int]:
    if payload == "digits":
        return list(args.concurrency)
    return list(args.large_json_streams if protocol == "http-json" else args.large_streams)


def bench_server(opened: AbstractContextManager[Server], args: argparse.Namespace,
                 rows: list[dict[str, Any]], skipped: dict[str, str], failures: dict[str, str],
                 meta: dict[str, Any]) -> None:
    with opened as server:
        meta[server.name] = server.meta
        for payload in args.payloads:
            for endpoint in server.endpoints.values():
                if endpoint.skip or endpoint.target in skipped:
                    if endpoint.skip and endpoint.target not in skipped:
                        log(f"{endpoint.target}: {endpoint.skip}")
                        skipped[endpoint.target] = endpoint.skip
                    continue
                # A JSON batch takes seconds a call: one is a measurement, three a long wait.
                slow = payload == "images" and endpoint.protocol == "http-json"
                min_requests = 1 if slow else args.min_requests
                for streams in stream_levels(payload, endpoint.protocol, args):
                    try:
                        rows.append(run_cell(endpoint, MODELS[payload], payload, streams, args, min_requests))
                    except TargetUnavailable as exc:
                        log(f"{endpoint.target}: SKIPPED, its server does not answer: {exc}")
                        skipped[endpoint.target] = f"its server does not answer: {exc}"
                        break
                    except Exception as exc:  # one broken cell must not hide the others' numbers
                        key = f"{endpoint.target} {payload} c={streams}"
                        log(f"{key} FAILED: {exc}")
                        failures[key] = f"{type(exc).__name__}: {exc}"


def main() -> int:
    args = parse_args()
    started = timestamp()
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    failures: dict[str, str] = {}
    meta: dict[str, Any] = {}
    servers: list[tuple[str, Callable[[], AbstractContextManager[Server]]]] = [
        ("stratus", lambda: stratus_server(args.targets, args.replicas)),
        ("mlserver", lambda: mlserver_peer(args.targets, args.replicas)),
    ]
    for name, opener in servers:
        if not any(target.startswith(name) for target in args.targets):
            continue
        try:
            bench_server(opener(), args, rows, skipped, failures, meta)
        except Exception as exc:
            log(f"{name} FAILED: {exc}")
            failures[name] = f"{type(exc).__name__}: {exc}"
    command = " ".join(["python", *sys.argv])
    payload = load_payload("grpc", started, args, SETTINGS, {"payloads": args.payloads}, meta, rows,
                           failures, skipped=skipped, command=command, baseline=BASELINE)
    payload["markdown"] = table = render(payload)
    publish("grpc", payload, table, args.json)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
