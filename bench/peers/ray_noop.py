"""Ray Serve 2.60 peer for the no-op benchmark (run with ``bench/.venv-ray/bin/python``).

One replica, ``max_ongoing_requests`` well above the benchmark's 32 connections, reached
through Serve's HTTP proxy. The handler parses the JSON body and returns ``{"ok": true}``,
like the Starlette ceiling and the Stratus handler.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray_driver import QUIET_LOGGING, parse_args, serve_forever
from starlette.requests import Request


@serve.deployment(
    name="noop",
    num_replicas=1,
    max_ongoing_requests=256,
    logging_config=QUIET_LOGGING,
)
class NoOp:
    async def __call__(self, request: Request) -> dict[str, Any]:
        await request.json()
        return {"ok": True}


def main() -> None:
    args = parse_args(__doc__ or "")
    serve_forever(NoOp.bind(), app_name="noop", deployment_name="noop", args=args)


if __name__ == "__main__":
    main()
