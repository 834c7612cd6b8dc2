"""The markdown report of ``bench/grpc.py``: the run's setting, one table per model, ratios
against MLServer measured in the same run, and the issue's two goal lines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from common import markdown_table
from grpc_stats import goal_line, outputs_agree, ratio

GOAL_THROUGHPUT_X = 3.0  # Stratus gRPC / MLServer gRPC, digits at 32 streams
GOAL_STREAMS = 32
GOAL_GBPS = 1.0  # the large batch through the Stratus gateway
PAYLOAD_TITLES = {
    "digits": "examples/digits: `pixels` FP32 [1, 64] -> `digit` INT64 [1], `probabilities` FP32 [1, 10]",
    "images": "large batch: `images` FP32 [{batch}, 3, 224, 224] ({mb:.1f} MB) -> `mean` FP32 [{batch}]",
}


Row = Mapping[str, Any]


def _find(rows: Sequence[Row], target: str, payload: str, streams: int) -> Row | None:
    return next((r for r in rows if r["target"] == target and r["payload"] == payload
                 and r["streams"] == streams), None)


def _cores(cpu_s: float, window_s: float) -> float | None:
    return cpu_s / window_s if window_s else None


def _split(row: Row) -> str:
    total, main = row["server_cpu_s"] / row["cpu_window_s"], row["server_main_cpu_s"] / row["cpu_window_s"]
    return f"{total:.2f} ({main:.2f} + {total - main:.2f})"


def payload_table(rows: Sequence[Mapping[str, Any]], payload: str, baseline: str) -> str:
    large = payload != "digits"
    headers = ["target", "streams", "clients", "req/s", "p50 ms", "p99 ms"]
    headers += ["GB/s", "GB/s one call"] if large else []
    headers += [f"req/s vs {baseline}", "client cores", "server cores", "errors"]
    out = []
    for row in (r for r in rows if r["payload"] == payload):
        peer = _find(rows, baseline, payload, row["streams"])
        cells: list[object] = [row["target"], row["streams"], row["clients"], row["requests_per_s"],
                               row["p50_ms"], row["p99_ms"]]
        cells += [row["gbps"], row["gbps_one_call"]] if large else []
        vs = ratio(row["requests_per_s"], peer["requests_per_s"] if peer else None)
        cells += [f"{vs:.2f}x" if vs is not None else None,
                  _cores(row["client_cpu_s"], row["cpu_window_s"]),
                  _split(row),
                  row["errors"]]
        out.append(cells)
    return markdown_table(headers, out)


def goal_lines(rows: Sequence[Mapping[str, Any]], baseline: str) -> list[str]:
    ours = _find(rows, "stratus-grpc", "digits", GOAL_STREAMS)
    peer = _find(rows, baseline, "digits", GOAL_STREAMS)
    lines = [goal_line(f"Stratus gRPC / MLServer gRPC throughput, digits, {GOAL_STREAMS} streams",
                       ratio(ours["requests_per_s"] if ours else None,
                             peer["requests_per_s"] if peer else None), GOAL_THROUGHPUT_X, "x")]
    large = [r for r in rows if r["target"] == "stratus-grpc" and r["payload"] == "images"]
    one = next((r for r in large if r["streams"] == 1), None)
    lines.append(goal_line("Stratus gRPC large batch, 1 stream (tensor bytes / p50 latency)",
                           one["gbps_one_call"] if one else None, GOAL_GBPS, " GB/s"))
    best = max(large, key=lambda r: r["gbps"], default=None)
    where = f", {best['streams']} streams" if best else ""
    lines.append(goal_line(f"Stratus gRPC large batch, best aggregate{where}",
                           best["gbps"] if best else None, GOAL_GBPS, " GB/s"))
    return lines


def notes(payload: Mapping[str, Any]) -> list[str]:
    rows = payload["results"]
    out = [f"- {target} SKIPPED: {why}" for target, why in payload.get("skipped", {}).items()]
    out += [f"- {key} FAILED: {error.splitlines()[0]}" for key, error in payload["failures"].items()]
    for row in rows:
        where = f"{row['target']} {row['payload']} c={row['streams']}"
        if row["errors"]:
            samples = "; ".join(row["error_samples"])
            out.append(f"- {where}: {row['errors']} failed calls, NOT a valid measurement ({samples})")
        if row["extended"]:
            out.append(f"- {where}: window stretched to {row['window_s']:.1f}s to finish its calls")
    for name in dict.fromkeys(r["payload"] for r in rows):
        checks = {r["target"]: r["check"] for r in rows if r["payload"] == name}
        differ = outputs_agree(checks)
        verdict = f"DIFFER from {next(iter(checks))}'s: {', '.join(differ)}" if differ else "agree"
        out.append(f"- {name}: first answers of {', '.join(checks)} {verdict}")
    return out


def render(payload: Mapping[str, Any]) -> str:
    machine, config, rows = payload["machine"], payload["config"], payload["results"]
    baseline = payload["baseline"]
    mlserver = payload["targets"].get("mlserver", {})
    clients = config["clients"]
    lines = [
        f"Machine: {machine['nproc']} CPUs ({machine['cpu_model']}), {machine['mem_total_gib']} GiB, "
        f"Linux {machine['kernel']}, Python {machine['python']}; commit {machine['git_commit']}",
        f"Command: `{payload['command']}`",
        f"Load: up to {clients} client processes a cell (bench/grpc_client.py: grpc.aio or aiohttp, "
        f"a request tritonclient built once, one gRPC channel or HTTP pool each), "
        f"{config['warmup']:g}s warm-up, {config['duration']:g}s measured; "
        f"{config['replicas']} inference process(es) a model: Stratus replicas, MLServer "
        f"{mlserver.get('mlserver_version', '-')} parallel_workers. Cores: CPU seconds / window "
        f"(the machine has {machine['nproc']}); the server's split as main process + the rest "
        f"(Stratus: gateway + replicas and zygotes; MLServer: server + inference workers).",
    ]
    if config.get("quick"):
        lines.append("QUICK RUN (--quick): a check that every target runs, NOT a measurement.")
    for name in config["payloads"]:
        if not any(r["payload"] == name for r in rows):
            continue
        tensor = next(r["tensor_bytes"] for r in rows if r["payload"] == name)
        title = PAYLOAD_TITLES[name].format(batch=config["batch"], mb=tensor / 1e6)
        lines += ["", f"{title}:", "", payload_table(rows, name, baseline)]
    lines += ["", "Goals (issue 22):", *goal_lines(rows, baseline)]
    extra = notes(payload)
    if extra:
        lines += ["", "Notes:", *extra]
    return "\n".join(lines)
