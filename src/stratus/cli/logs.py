"""``stratus logs``: a deployment's replica logs, as text for people or as the raw JSON lines."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import typer

from stratus.cli.client import Client, CliError, describe_error
from stratus.cli.options import ApiKey, AsJson, Namespace, Server, make_client

# Printed after the time and before the message; the rest of a record's fields are not shown.
_TAGS = ("replica", "stream")


def render(line: str) -> str:
    """A JSON log line as ``time replica stream [level] message`` (and its traceback)."""
    try:
        entry: Any = json.loads(line)
    except ValueError:
        return line
    if not isinstance(entry, dict):
        return line
    parts = []
    ts = entry.get("ts")
    if isinstance(ts, int | float):
        parts.append(datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z")
    parts.extend(str(entry[tag]) for tag in _TAGS if entry.get(tag))
    level = entry.get("level")
    if level and level != "info":
        parts.append(str(level).upper())
    if entry.get("request_id"):
        parts.append(f"[{entry['request_id']}]")
    parts.append(str(entry.get("message", "")))
    text = " ".join(parts)
    if entry.get("exc"):
        text += "\n" + str(entry["exc"]).rstrip("\n")
    return text


def _emit(text: str, raw: bool) -> None:
    for line in text.splitlines():
        if line:
            sys.stdout.write((line if raw else render(line)) + "\n")
    sys.stdout.flush()


def logs(
    name: Annotated[str, typer.Argument(help="Deployment name")],
    tail: Annotated[int, typer.Option(help="Lines from the end")] = 200,
    since: Annotated[str | None, typer.Option(
        help="Only lines from this long ago (10m, 2h, 1d) or since an ISO time")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines")] = False,
    as_json: AsJson = False,
    server: Server = None,
    api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """Print a deployment's replica logs: stdout, stderr and ctx.logger, tagged by replica."""
    params: dict[str, Any] = {"tail": tail}
    if since:
        params["since"] = since
    with make_client(server, api_key, namespace) as client:
        logs_of(client, f"/api/deployments/{name}/logs", params, follow, as_json)


def logs_of(client: Client, path: str, params: dict[str, Any], follow: bool, raw: bool,
            emit: Any = None) -> None:
    """Print the log at ``path`` (a deployment's or a job's); with ``follow``, as it grows,
    until the server ends the stream or Ctrl-C. ``emit`` takes each text (default: stdout)."""
    emit = emit or _emit
    if not follow:
        emit(client.request("GET", path, params=params).text, raw)
        return
    try:
        with client.http.stream("GET", path, params={**params, "follow": "true"},
                                timeout=httpx.Timeout(10.0, read=None)) as response:
            if response.status_code != 200:
                response.read()
                raise CliError(describe_error(response))
            for line in response.iter_lines():
                emit(line, raw)
    except httpx.TransportError as exc:
        raise CliError(f"lost the Stratus server at {client.base_url}: {exc}", 2) from None
    except KeyboardInterrupt:
        pass
