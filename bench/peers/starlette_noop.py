"""The ceiling: a plain in-process Starlette no-op on uvicorn (uvloop + httptools, 1 worker).

Run with the project venv: ``.venv/bin/python bench/peers/starlette_noop.py --port 8000``.
``GET /readyz`` answers 200; ``POST /`` parses the JSON body and returns ``{"ok": true}``.
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route


async def noop(request: Request) -> JSONResponse:
    await request.json()
    return JSONResponse({"ok": True})


async def readyz(_request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


app = Starlette(routes=[Route("/", noop, methods=["POST"]), Route("/readyz", readyz)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        workers=1,
    )


if __name__ == "__main__":
    main()
