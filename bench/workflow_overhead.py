"""Workflow overhead (issue 16): a 5-step sequential workflow of no-op steps vs 5 sync invokes.

TODO: the workflows API has not landed yet; until it does this reports a marked TODO instead
of a figure, so the table says so rather than hiding the row.
"""

from __future__ import annotations

import argparse
from typing import Any

from common import http_call, log
from stratus_target import StratusServer

STEPS = 5


def workflow_overhead(server: StratusServer, deployment: str, args: argparse.Namespace) -> dict[str, Any]:
    resp = http_call("GET", f"{server.base_url}/api/workflows", headers=server.auth_headers())
    if resp.status == 404:
        log("workflow overhead: TODO, no /api/workflows on this server")
        return {"todo": "workflows API (POST /api/workflows) not on this tree: not measured"}
    return {"todo": f"GET /api/workflows -> {resp.status}: measurement not written yet"}
