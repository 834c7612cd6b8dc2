"""``stratus keys rotate-master``: ask the server to rotate the master key (global admins)."""

from __future__ import annotations

import json
import sys
from typing import Any

from stratus.cli.options import ApiKey, AsJson, Server, make_client
from stratus.cli.terminal import make_console

err = make_console(stderr=True)


def rotate_master(as_json: AsJson = False, server: Server = None, api_key: ApiKey = None) -> None:
    """Rotate the master key: a new key wraps every data key (artifacts and secrets), the
    old one is retired. No artifact is rewritten."""
    with make_client(server, api_key, None) as client:
        report: dict[str, Any] = client.json("POST", "/api/master-key/rotate")
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    counts = ", ".join(f"{count} {what.replace('_', ' ')}"
                       for what, count in report["rewrapped"].items())
    retired = ", ".join(report["retired_key_ids"]) or "none"
    err.print(f"master key is now {report['master_key_id']} (retired: {retired}); "
              f"data keys re-wrapped: {counts}", highlight=False)
    if report["key_file"]:
        err.print(f"key file: {report['key_file']}", highlight=False)
    for item in report["unreadable"]:
        err.print(f"[yellow]not re-wrapped[/yellow]: {item}", highlight=False)
    if report.get("next_step"):
        err.print(f"next: {report['next_step']}", highlight=False)
