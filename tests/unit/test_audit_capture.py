"""Audit capture: dotted action names from route templates, and the middleware around a real
FastAPI app and a real audit log on SQLite (what it records, what it leaves out)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from stratus.gateway.audit import AuditMiddleware, action_name, mark_denied, note_target
from stratus.security.audit import AuditEvent, verify
from stratus.security.audit_log import AuditLog
from stratus.security.roles import Principal, Role
from stratus.store.audit import AuditStore
from stratus.store.db import make_engine, migrate, sqlite_url


@pytest.mark.parametrize(("method", "template", "action"), [
    ("POST", "/api/deployments", "deployments.create"),
    ("PATCH", "/api/deployments/{name}", "deployments.update"),
    ("DELETE", "/api/deployments/{name}", "deployments.delete"),
    ("PUT", "/api/deployments/{name}/traffic", "deployments.traffic.put"),
    ("POST", "/api/deployments/{name}/rollback", "deployments.rollback"),
    ("POST", "/api/models/{name}/versions", "models.versions.create"),
    ("POST", "/api/models/{name}/versions/{version}/promote", "models.versions.promote"),
    ("POST", "/api/gc", "gc"),
    ("POST", "/api/deployments/{name}/invoke", "deployments.invoke"),
    ("POST", "/v2/models/{name}/infer", "v2.models.infer"),
    ("POST", "/v1/chat/completions", "v1.chat.completions.create"),
    ("GET", "/api/deployments/{name}/logs", "deployments.logs.read"),
    ("HEAD", "/api/bundles/{digest}", "bundles.read"),
    ("POST", "/api/blobs/{digest}/shares", "blobs.shares.create"),
    ("POST", "/api/secrets/{name}", "secrets.create"),
])
def test_action_names(method: str, template: str, action: str) -> None:
    assert action_name(method, template) == action


class _Identify:
    """Test scaffolding in place of the edge: the principal named by a header, or a 401."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers", ()))
        actor = headers.get(b"x-actor")
        if scope["type"] == "http" and actor is None:
            await JSONResponse({"error": "no"}, status_code=401)(scope, receive, send)
            return
        if scope["type"] == "http":
            state = scope.setdefault("state", {})
            state["principal"] = Principal("ns", Role.ADMIN, actor.decode())
            state["request_id"] = headers.get(b"x-request-id", b"").decode()
        await self.app(scope, receive, send)


def _app() -> FastAPI:
    app = FastAPI()

    @app.post("/api/things", status_code=201)
    async def create(request: Request) -> dict[str, str]:
        note_target(request, "from-body")
        return {}

    @app.delete("/api/things/{name}")
    async def explode(name: str) -> None:
        raise RuntimeError("boom")

    @app.get("/api/things/{name}")
    async def hidden(name: str, request: Request) -> JSONResponse:
        mark_denied(request.scope)  # e.g. a foreign namespace, answered as not found
        return JSONResponse({"error": "not found"}, status_code=404)

    @app.get("/api/things")
    async def listing() -> list[str]:
        return []

    @app.post("/api/experiments/{name}/events", status_code=202)
    async def events(name: str) -> dict[str, str]:
        return {}

    app.add_middleware(_Identify)
    return app


@pytest.fixture
async def capture(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, AuditLog, AuditStore]]:
    engine = make_engine(sqlite_url(tmp_path))
    migrate(engine)
    store = AuditStore(engine)
    audit = AuditLog()
    audit.start(store)
    transport = httpx.ASGITransport(app=AuditMiddleware(_app(), audit), raise_app_exceptions=False,
                                    client=("10.1.2.3", 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://stratus") as client:
        yield client, audit, store
    await audit.close()
    engine.dispose()


async def _events(audit: AuditLog, store: AuditStore) -> list[AuditEvent]:
    assert await audit.flush()
    records = list(store.scan())
    assert verify(records).ok
    return [record.event for record in records]


async def test_mutations_denials_and_failures_are_recorded_and_reads_are_not(
        capture: tuple[httpx.AsyncClient, AuditLog, AuditStore]) -> None:
    client, audit, store = capture
    alice = {"x-actor": "key:alice", "x-request-id": "req-7"}
    assert (await client.post("/api/things", headers=alice)).status_code == 201
    assert (await client.get("/api/things", headers=alice)).status_code == 200
    assert (await client.delete("/api/things/x", headers=alice)).status_code == 500
    assert (await client.get("/api/things/secret", headers=alice)).status_code == 404
    assert (await client.post("/api/experiments/e/events", headers=alice)).status_code == 202
    assert (await client.post("/api/experiments/e/events")).status_code == 401
    assert (await client.patch("/api/nowhere")).status_code == 401

    seen = [(e.actor, e.action, e.target, e.result, e.status) for e in await _events(audit, store)]
    assert seen == [
        ("key:alice", "things.create", "from-body", "ok", 201),
        ("key:alice", "things.delete", "x", "error", 500),  # an unhandled exception
        ("key:alice", "things.read", "secret", "denied", 404),  # marked as denied
        ("anonymous", "experiments.events.create", "e", "denied", 401),
        ("anonymous", "unmatched.patch", "/api/nowhere", "denied", 401),
    ]
    first = (await _events(audit, store))[0]
    assert (first.namespace, first.source, first.request_id) == ("ns", "10.1.2.3", "req-7")
