"""``stratus deploy``: bundle the code, upload it if the server lacks it, apply the spec, and
wait for the deployment to become ready."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer

from stratus.cli.client import Client, CliError
from stratus.cli.judging import (
    ErrorRatio,
    MinErrors,
    MinRequests,
    P95MinDelta,
    P95Relative,
    Watch,
    Window,
    duration_option,
    judge_fields,
    merge_rollout,
)
from stratus.cli.manifest import ManifestError, heavy_imports, load_target
from stratus.cli.naming import resolve_name
from stratus.cli.options import ApiKey, Namespace, Server, make_client
from stratus.cli.packing import pack
from stratus.cli.terminal import make_console
from stratus.cli.upload import upload

console = make_console(stderr=True)
MODEL_HELP = "A model the handler loads, name@1.2.0 (pinned) or name@production (follows promotions)"
SCHEDULE_HELP = "Scheduled floor, '<cron> for <duration> keep <n>', e.g. '55 8 * * 1-5 for 9h5m keep 3'"
PRELOAD_HELP = (
    "Module to import once in the zygote (repeatable); "
    "default: the heavy modules (torch, transformers, ...) that the entrypoint file imports"
)


def wait_ready(client: Client, name: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    with console.status(f"waiting for {name} to become ready"):
        while True:
            view: dict[str, Any] = client.json("GET", f"/api/deployments/{name}")
            if view["status"] == "failed":
                detail = (view.get("last_error") or {}).get("detail") or ""
                raise CliError(f"deployment {name} failed: {view['reason']}\n{detail}".rstrip())
            wanted = max(1, view["scaling"]["min_replicas"])
            ready = sum(1 for r in view["replicas"]["items"]
                        if r["state"] == "ready" and r["revision"] == view["revision"])
            if view["status"] == "ready" and ready >= wanted:
                return view
            if time.monotonic() > deadline:
                raise CliError(f"deployment {name} not ready after {timeout_s:g}s")
            time.sleep(0.2)


def _parse_env(pairs: list[str], option: str = "--env") -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"{option} takes KEY=VALUE, not {pair!r}")
        env[key] = value
    return env


def deploy(
    target: Annotated[str | None, typer.Argument(
        help="path/to/file.py:Object or a stratus.yaml (none with --llm or --embeddings)")] = None,
    llm: Annotated[str | None, typer.Option(
        help="Serve this causal LM from the model store (name@version or name@stage) with "
             "continuous batching, on /v1/completions and /v1/chat/completions")] = None,
    embeddings: Annotated[str | None, typer.Option(
        help="Serve this embedding model from the model store on /v1/embeddings")] = None,
    config: Annotated[str | None, typer.Option(
        help="Handler config as JSON (for --llm: max_num_seqs, max_num_tokens, max_queue)")] = None,
    name: Annotated[str | None, typer.Option(help=(
        "Deployment name [default: the manifest's or @deployment(name=...), else the "
        "file's name: my_model.py deploys as my-model]"))] = None,
    min_replicas: Annotated[int | None, typer.Option(help="Replicas kept warm (0 = serverless)")] = None,
    max_replicas: Annotated[int | None, typer.Option(help="Upper bound on replicas")] = None,
    target_concurrency: Annotated[float | None, typer.Option(help="Requests per replica to aim for")] = None,
    max_concurrency: Annotated[int | None, typer.Option(help="Hard limit of requests per replica")] = None,
    timeout: Annotated[float | None, typer.Option(help="Per-request timeout, seconds")] = None,
    memory: Annotated[int | None, typer.Option(help="Per-replica memory limit, MiB")] = None,
    scale_to_zero_after: Annotated[float | None, typer.Option(help="Idle seconds, then scale to min")] = None,
    max_queued: Annotated[int | None, typer.Option(help="Held requests before 429")] = None,
    retries: Annotated[int | None, typer.Option(
        help="Attempts in all for a lost request (1: no retries); see docs/reliability.md")] = None,
    idempotent: Annotated[bool | None, typer.Option(
        "--idempotent/--not-idempotent",
        help="The handler may run twice: resend requests lost after they reached it")] = None,
    policy: Annotated[str | None, typer.Option(help="kpa, fixed_keepalive or hybrid_histogram")] = None,
    policy_config: Annotated[str | None, typer.Option(help="The policy's settings, as JSON")] = None,
    initial_replicas: Annotated[int | None, typer.Option(help="Replicas right after deploy")] = None,
    target_utilization: Annotated[float | None, typer.Option(help="Share of the target to aim at")] = None,
    provisioned: Annotated[int | None, typer.Option(help="Replicas always kept warm")] = None,
    schedule: Annotated[list[str] | None, typer.Option(help=SCHEDULE_HELP)] = None,
    model: Annotated[list[str] | None, typer.Option(help=MODEL_HELP)] = None,
    threads: Annotated[int | None, typer.Option(help="Intra-op threads per replica")] = None,
    preload: Annotated[list[str] | None, typer.Option(help=PRELOAD_HELP)] = None,
    no_preload: Annotated[bool, typer.Option("--no-preload", help="Preload nothing")] = False,
    env: Annotated[list[str] | None, typer.Option(help="KEY=VALUE for the replicas (repeatable)")] = None,
    secret: Annotated[list[str] | None, typer.Option(
        help="ENV=SECRET: set $ENV in the replicas from the namespace's secret (repeatable)")] = None,
    canary: Annotated[int | None, typer.Option(
        help="Roll a new revision out as a canary starting at this percent (default: "
             "blue-green, all traffic once warm)")] = None,
    step: Annotated[int, typer.Option(help="Canary step, percent")] = 25,
    interval: Annotated[str, typer.Option(help="Canary stage length, e.g. 60s or 5m")] = "60s",
    window: Window = None,
    watch: Watch = None,
    error_ratio_relative: ErrorRatio = None,
    min_errors: MinErrors = None,
    p95_relative: P95Relative = None,
    p95_min_delta_ms: P95MinDelta = None,
    min_requests: MinRequests = None,
    promote: Annotated[bool, typer.Option(
        help="Send a new revision traffic (--no-promote: record it; `stratus rollout` later)")
    ] = True,
    wait: Annotated[bool, typer.Option(help="Wait until min_replicas are ready")] = True,
    wait_timeout: Annotated[float, typer.Option(help="Seconds to wait for readiness")] = 600.0,
    server: Server = None,
    api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """Deploy a handler (a class or a function) from a file or a stratus.yaml manifest, or a
    model from the store with a built-in server (--llm, --embeddings)."""
    if sum(x is not None for x in (target, llm, embeddings)) != 1:
        raise CliError("give exactly one of TARGET, --llm MODEL_REF or --embeddings MODEL_REF")
    try:
        loaded = load_target(target) if target is not None else None
    except ManifestError as exc:
        raise CliError(str(exc)) from None
    spec: dict[str, Any] = dict(loaded.settings) if loaded is not None else {}
    if llm is not None:
        spec["llm"] = llm
    if embeddings is not None:
        spec["embeddings"] = embeddings
    if config is not None:
        try:
            spec["config"] = json.loads(config)
        except ValueError as exc:
            raise CliError(f"--config is not valid JSON: {exc}") from None
    flags = {
        "name": name, "min_replicas": min_replicas, "max_replicas": max_replicas,
        "target_concurrency": target_concurrency, "max_concurrency": max_concurrency,
        "timeout_s": timeout, "memory_mb": memory, "scale_to_zero_after_s": scale_to_zero_after,
        "max_queued": max_queued, "threads": threads, "policy": policy,
        "initial_replicas": initial_replicas, "target_utilization": target_utilization,
        "provisioned_replicas": provisioned, "schedules": schedule or None,
        "models": model or None,
    }
    if policy_config is not None:
        try:
            flags["policy_config"] = json.loads(policy_config)
        except ValueError as exc:
            raise CliError(f"--policy-config is not valid JSON: {exc}") from None
    spec.update({key: value for key, value in flags.items() if value is not None})
    if retries is not None or idempotent is not None:
        declared_retries = spec.get("retries")
        merged = dict(declared_retries) if isinstance(declared_retries, dict) else {}
        if retries is not None:
            merged["attempts"] = retries
        if idempotent is not None:
            merged["idempotent"] = idempotent
        spec["retries"] = merged
    if env:
        spec["env"] = {**spec.get("env", {}), **_parse_env(env)}
    if secret:
        spec["secrets"] = {**spec.get("secrets", {}), **_parse_env(secret, "--secret")}
    judged = judge_fields(watch=watch, window=window, error_ratio_relative=error_ratio_relative,
                          min_errors=min_errors, p95_relative=p95_relative,
                          p95_min_delta_ms=p95_min_delta_ms, min_requests=min_requests)
    if canary is not None or not promote:
        judged["promote"] = promote
    if canary is not None:
        judged.update(canary=canary, step=step,
                      interval_s=duration_option(interval, "--interval"))
    if judged:
        declared = spec.get("rollout")
        spec["rollout"] = merge_rollout(declared if isinstance(declared, dict) else {}, judged)
    if no_preload:
        spec["preload"] = []
    elif preload:
        spec["preload"] = preload
    elif "preload" not in spec and loaded is not None and loaded.source is not None:
        spec["preload"] = heavy_imports(loaded.source)
        if spec["preload"]:
            console.print(f"[dim]preloading {', '.join(spec['preload'])} "
                          f"(imported by {loaded.source.name})[/dim]")
    # Before anything is packed: a deploy that cannot be named should fail in a moment.
    source, entrypoint = (loaded.source, loaded.entrypoint) if loaded else (None, None)
    resolved = resolve_name(name, spec.get("name"), source, entrypoint)
    if resolved is not None:
        spec["name"] = resolved
        if name is None and "name" not in (loaded.settings if loaded else {}):
            console.print(f"[dim]name {resolved}, from {source.name if source else ''} "
                          "(--name sets another)[/dim]")
    with make_client(server, api_key, namespace) as client:
        if loaded is not None and loaded.root is not None:
            bundle = pack(loaded.root)
            upload(client, "bundles", bundle.data, bundle.digest, "code bundle")
            spec["code"] = {"bundle": bundle.digest, "entrypoint": loaded.entrypoint}
        with console.status("importing and validating the code"):
            view = client.json("POST", "/api/deployments", json=spec)
        console.print(f"deployment [bold]{view['name']}[/bold] at revision {view['revision']} "
                      f"({view['handler']['kind']} handler)")
        strategy = spec.get("rollout") or {}
        if view["revision"] != view["serving_revision"] and (
                strategy.get("canary") is not None or strategy.get("promote") is False):
            state = "recorded; it takes no traffic until `stratus rollout`" \
                if strategy.get("promote") is False else "rolling out as a canary"
            console.print(f"revision {view['revision']} {state}; "
                          f"see `stratus traffic {view['name']}`")
        elif wait and view["scaling"]["min_replicas"] > 0:
            view = wait_ready(client, view["name"], wait_timeout)
            console.print(f"[green]ready[/green]: {view['replicas']['ready']} replica(s)")
            if view["reason"]:  # the watch after the switch
                console.print(f"[dim]{view['reason']}[/dim]")
        elif view["scaling"]["min_replicas"] == 0:
            console.print("[green]ready[/green]: scaled to zero; the first request starts a replica")
