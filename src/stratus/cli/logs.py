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
from stratus.cli.terminal import make_console

err = make_console(stderr=True)

# Printed after the time and before the message; the rest of a record's fields are not shown.
_TAGS = ("replica", "stream")


def render(line: str) -> str:
    """A JSON log line as ``time replica stream [level] [request trace span] message`` (and
    its traceback)."""
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
        traced = (f" trace {entry['trace_id']} span {entry.get('span_id', '')}"
                  if entry.get("trace_id") else "")
        parts.append(f"[{entry['request_id']}{traced}]")
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
        printed = logs_of(client, f"/api/deployments/{name}/logs", params, follow, as_json)
    if not printed and not follow:
        # Said on stderr, so that stdout stays the log and nothing else.
        err.print(f"no log lines yet for {name}" + (f" in the last {since}" if since else ""),
                  highlight=False, markup=False)


def logs_of(client: Client, path: str, params: dict[str, Any], follow: bool, raw: bool,
            emit: Any = None) -> bool:
    """Print the log at ``path`` (a deployment's or a job's); with ``follow``, as it grows,
    until the server ends the stream or Ctrl-C. ``emit`` takes each text (default: stdout).
    Without ``follow``, whether there was any line to print."""
    emit = emit or _emit
    if not follow:
        text = client.request("GET", path, params=params).text
        emit(text, raw)
        return bool(text.strip())
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
    return True
