"""The application built in-process and never served: for the tests that read its route table
or its OpenAPI document at collection time, before any server runs."""

from __future__ import annotations

import tempfile
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from stratus.config import Settings
from stratus.server import create_app


@cache
def control_plane() -> FastAPI:
    """The FastAPI app under the data plane and the middleware that wraps it."""
    with tempfile.TemporaryDirectory() as data:
        app: Any = create_app(Settings(data_dir=Path(data))).control_plane
    while not isinstance(app, FastAPI):
        app = app.app
    return app


def openapi_document() -> dict[str, Any]:
    document: dict[str, Any] = control_plane().openapi()
    return document
