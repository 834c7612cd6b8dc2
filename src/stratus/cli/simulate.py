"""``stratus simulate``: replay an invocation trace through an autoscaling policy offline, or
generate a realistic mixed trace to replay."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from stratus.autoscale.build import SETTINGS, validate_scaling
from stratus.cli.terminal import make_console
from stratus.errors import BadRequest
from stratus.sim.report import Metrics, SimReport
from stratus.sim.simulator import SimSettings, spec_policy_factory
from stratus.sim.simulator import simulate as run_simulation
from stratus.sim.tracegen import TraceError, generate_trace, read_trace, write_trace
from stratus.spec import RuntimeFields, ScalingFields, ScalingSpec

out = make_console()
err = make_console(stderr=True)

# ScalingSpec fields that --policy-config may set; every other key but the simulator's own
# belongs to the policy's settings (the pydantic models in control/autoscaling.py).
SCALING_KEYS = frozenset({
    "min_replicas", "max_replicas", "initial_replicas", "target_concurrency", "target_utilization",
    "scale_to_zero_after_s", "provisioned_replicas", "schedules", "max_queued", "queue_timeout_s",
})
RUNTIME_KEYS = frozenset({"max_concurrency", "memory_mb"})
# FaaS-like: one request per replica, scaled out as far as the load asks (not the live
# default of 4 replicas of 8 slots at 70%).
SIM_DEFAULTS: dict[str, Any] = {"target_utilization": 1.0, "max_replicas": 1000}
POLICY_HELP = f"Autoscaling policy: {', '.join(sorted(SETTINGS))}"
CONFIG_HELP = ("JSON object: ScalingSpec fields (min_replicas, max_replicas, target_utilization, "
               "schedules, ...), the policy's own settings (e.g. keepalive_s), max_concurrency "
               "(slots per replica, default 1) and memory_mb")


def _fail(message: str) -> NoReturn:
    err.print(f"[red]error[/red]: {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


def parse_config(policy: str, text: str | None) -> tuple[ScalingSpec, int, float | None]:
    """Split --policy-config into the scaling spec (with the policy's settings inside), the
    replica capacity and the per-replica memory in GB. Raises BadRequest."""
    if policy not in SETTINGS:
        raise BadRequest(f"unknown policy {policy!r}; choose one of {sorted(SETTINGS)}")
    try:
        raw = json.loads(text) if text else {}
    except ValueError as exc:
        raise BadRequest(f"--policy-config is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise BadRequest("--policy-config must be a JSON object")
    scaling = {k: v for k, v in raw.items() if k in SCALING_KEYS}
    runtime = {k: v for k, v in raw.items() if k in RUNTIME_KEYS}
    own = {k: v for k, v in raw.items() if k not in SCALING_KEYS | RUNTIME_KEYS}
    problems: list[str] = []
    try:
        fields = ScalingFields.model_validate({**SIM_DEFAULTS, **scaling, "policy": policy,
                                               "policy_config": own})
    except ValidationError as exc:
        problems.append(_problems(exc))
    try:
        limits = RuntimeFields.model_validate(runtime)
    except ValidationError as exc:
        problems.append(_problems(exc))
    if problems:
        raise BadRequest(f"invalid --policy-config: {'; '.join(problems)}")
    spec = ScalingSpec(**fields.model_dump(exclude_none=True))
    spec.max_replicas = max(spec.max_replicas, spec.min_replicas)  # as resolve_scaling does
    try:
        validate_scaling(spec)  # the policy's own keys: unknown ones and bad values
    except BadRequest as exc:
        known = ", ".join(SETTINGS[policy].model_fields)
        raise BadRequest(f"{exc.message} ({policy} takes {known}; the simulator also takes "
                         f"{', '.join(sorted(SCALING_KEYS | RUNTIME_KEYS))})") from None
    memory_gb = limits.memory_mb / 1024.0 if limits.memory_mb is not None else None
    return spec, limits.max_concurrency or 1, memory_gb


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _row(name: str, m: Metrics) -> list[str]:
    return [name, f"{m.invocations:,}", f"{m.cold_starts:,}", f"{m.cold_start_fraction:.2%}",
            _ms(m.p50_latency_ms), _ms(m.p99_latency_ms), f"{m.busy_replica_seconds:,.0f}",
            f"{m.idle_replica_seconds:,.0f}", f"{m.shed + m.timed_out:,}", f"${m.cost:,.4f}"]


def _print_table(report: SimReport, title: str) -> None:
    table = Table("DEPLOYMENT", "INVOCATIONS", "COLD", "COLD %", "P50 ms", "P99 ms", "BUSY s",
                  "IDLE s", "FAILED", "COST", title=title)
    for name, metrics in report.deployments.items():
        table.add_row(*_row(name, metrics))
    table.add_section()
    table.add_row(*_row("TOTAL", report.total), style="bold")
    # Piped output gets rich's 80 columns, which would cut every number short.
    (out if out.is_terminal else Console(width=132)).print(table)


def simulate(
    trace: Annotated[Path | None, typer.Option(help="Trace CSV: timestamp_s,deployment,duration_ms")] = None,
    policy: Annotated[str | None, typer.Option(help=POLICY_HELP)] = None,
    policy_config: Annotated[str | None, typer.Option(help=CONFIG_HELP)] = None,
    cold_start_ms: Annotated[float, typer.Option(min=0, help="Time for a replica to become ready")] = 500.0,
    tick_s: Annotated[float, typer.Option(min=0.001, help="Autoscaler tick, seconds")] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
    generate: Annotated[Path | None, typer.Option(help="Write a generated trace CSV here")] = None,
    deployments: Annotated[int, typer.Option(min=1, help="Generated: deployments")] = 50,
    hours: Annotated[float, typer.Option(min=0.001, help="Generated: hours of traffic")] = 24.0,
    seed: Annotated[int, typer.Option(help="Generated: random seed")] = 0,
) -> None:
    """Simulate an autoscaling policy on a trace (--trace), or generate a trace (--generate)."""
    if (trace is None) == (generate is None):
        _fail("give either --trace FILE (simulate) or --generate OUT.csv (make a trace)")
    if generate is not None:
        invocations = generate_trace(deployments, hours, seed)
        try:
            write_trace(generate, invocations)
        except OSError as exc:
            _fail(f"cannot write {generate}: {exc.strerror or exc}")
        names = len({inv.deployment for inv in invocations})
        err.print(f"wrote {len(invocations):,} invocations of {names} deployments over {hours:g} h "
                  f"(seed {seed}) to {generate}")
        return
    assert trace is not None
    if policy is None:
        _fail(f"--trace needs --policy ({', '.join(sorted(SETTINGS))})")
    try:
        spec, max_concurrency, memory_gb = parse_config(policy, policy_config)
        factory = spec_policy_factory(spec, max_concurrency)
    except BadRequest as exc:
        _fail(exc.message)
    try:
        invocations = read_trace(trace)
    except OSError as exc:
        _fail(f"cannot read {trace}: {exc.strerror or exc}")
    except TraceError as exc:
        _fail(f"{trace}: {exc}")
    except UnicodeDecodeError:
        _fail(f"{trace} is not UTF-8 text")
    settings = SimSettings(tick_s=tick_s, cold_start_ms=cold_start_ms, max_concurrency=max_concurrency,
                           max_queued=spec.max_queued, queue_timeout_s=spec.queue_timeout_s,
                           memory_gb=memory_gb)
    started = time.perf_counter()
    report = run_simulation(invocations, factory, settings)
    elapsed = time.perf_counter() - started
    if as_json:
        config = {**spec.model_dump(mode="json", exclude={"policy", "policy_config"}),
                  "max_concurrency": max_concurrency, "memory_gb": memory_gb}
        result = {**report.to_dict(), "policy": policy, "policy_config": spec.policy_config,
                  "config": config, "cold_start_ms": cold_start_ms, "tick_s": tick_s,
                  "trace": str(trace)}
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    _print_table(report, f"{policy} on {trace.name}: cold start {cold_start_ms:g} ms, "
                         f"{max_concurrency} slot(s) per replica")
    err.print(f"[dim]simulated {report.total.invocations:,} invocations in {elapsed:.1f} s"
              "[/dim]")
