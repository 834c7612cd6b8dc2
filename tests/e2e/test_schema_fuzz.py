"""Schemathesis over the server's OpenAPI document, against a real server with the global
admin's credentials: for every operation, generated requests never get a server error, and every
answer is one the document describes (its status code, content type and body schema).

Operations are collected from the document built in-process, since collection comes before any
server runs (schemathesis's lazy fixture loader does not work with this pytest); the first test
checks that the server serves that very document.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from inprocess import openapi_document
from server import TEST_ENV, StratusServer

pytestmark = pytest.mark.solo  # `make test` runs it alone: its cases vanish under xdist

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
EXAMPLES = 10  # per operation in the fuzzing phase; the whole file stays near a minute


def _document() -> tuple[dict[str, Any], Exception | None]:
    """The document, or an empty one and the error: a broken app fails the first test here
    rather than the collection (which would stop every other test file too)."""
    try:
        return openapi_document(), None
    except Exception as exc:
        return {"openapi": "3.1.0", "info": {"title": "broken", "version": "0"}, "paths": {}}, exc


DOCUMENT, BROKEN = _document()
schema = schemathesis.openapi.from_dict(DOCUMENT, config=schemathesis.Config.from_dict({
    "seed": 8,
    "generation": {"max-examples": EXAMPLES, "deterministic": True},
    "request-timeout": 30,
}))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StratusServer]:
    """A server of its own: the fuzzer creates keys, secrets and experiments, and may rotate
    the master key or collect blobs."""
    instance = StratusServer(Path(tmp_path_factory.mktemp("fuzz")), TEST_ENV)
    instance.start()
    yield instance
    instance.stop()


def test_the_server_serves_the_document_fuzzed(server: StratusServer) -> None:
    if BROKEN is not None:
        raise BROKEN
    served = server.http.get("/openapi.json")
    assert served.status_code == 200
    assert served.json() == json.loads(json.dumps(DOCUMENT))


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_operation_conforms_to_its_schema(case: schemathesis.Case[Any], server: StratusServer) -> None:
    case.call_and_validate(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"},
                           checks=CHECKS)


def test_an_unknown_route_answers_in_the_contract_shape(server: StratusServer) -> None:
    response = httpx.get(f"{server.url}/api/nothing-here",
                         headers={"authorization": f"Bearer {server.key}"})
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"type", "message", "request_id"}
