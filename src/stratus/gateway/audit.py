"""Audit capture: a plain ASGI middleware around the control-plane app that appends an audit event
for every mutation and every 401 or 403, plus the hook the data plane calls on its own denials.

Plain ASGI rather than ``BaseHTTPMiddleware``, which would buffer and add a task per request.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.routing import compile_path
from starlette.types import Message, Receive, Scope, Send

from stratus.security.audit import AuditEvent, Result, result_of
from stratus.security.audit_log import AuditLog
from stratus.security.roles import Principal

log = logging.getLogger("stratus.audit")

READS = frozenset({"GET", "HEAD", "OPTIONS"})
DENIED = (401, 403)
# Data rather than control: conversion events arrive like invocations, at any rate. Denials on
# these routes are still recorded.
NOT_AUDITED = frozenset({"/api/experiments/{name}/events"})
VERBS = {"GET": "read", "HEAD": "read", "PUT": "put", "PATCH": "update", "DELETE": "delete"}
TARGET_KEY = "audit_target"  # in the scope's state: a route's own word on its target
# In the scope's state: an authorisation failure answered with another status (a foreign
# namespace answers 404, so that namespaces cannot be enumerated).
DENIED_KEY = "audit_denied"
UNMATCHED_PATH = 200  # of a path that matches no route, this much is kept as the target


def action_name(method: str, template: str) -> str:
    """A dotted action from a route template: the template's words, then a verb.

    ``PUT /api/deployments/{name}/traffic`` is ``deployments.traffic.put``. A POST to a
    collection (a plural word) creates: ``POST /v1/chat/completions`` is
    ``v1.chat.completions.create``; a POST to a verb is that verb: ``deployments.rollback``.
    """
    segments = [s for s in template.split("/") if s]
    if segments[:1] == ["api"]:
        segments = segments[1:]
    words = [s for s in segments if not s.startswith("{")]
    if method == "POST":
        if segments and words and segments[-1] == words[-1] and not words[-1].endswith("s"):
            return ".".join(words)
        verb = "create"
    else:
        verb = VERBS.get(method, method.lower())
    return ".".join([*words, verb])


def note_target(request: Request, target: str) -> None:
    """For a route whose target is not in its path (``POST /api/deployments`` names the
    deployment in its body): what its audit record names."""
    request.scope.setdefault("state", {})[TARGET_KEY] = target


def mark_denied(scope: Scope) -> None:
    """Record this request as denied whatever status it is answered with."""
    scope.setdefault("state", {})[DENIED_KEY] = True


def _flagged(scope: Scope) -> bool:
    return bool((scope.get("state") or {}).get(DENIED_KEY))


def _source(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


class AuditMiddleware:
    """Wraps the control-plane app (FastAPI), outside its error handling, so it sees every
    status it answers, the 401s of the edge before routing included.

    Routes are matched against the app's OpenAPI paths, which hold every route's full template
    (data-plane routes too), whether or not the router got to see the request.
    """

    def __init__(self, app: FastAPI, log: AuditLog) -> None:
        self.app = app
        self.log = log
        self._templates: list[tuple[str, re.Pattern[str], frozenset[str]]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        mutation = scope["method"] not in READS
        recorded = False

        async def watch(message: Message) -> None:
            nonlocal recorded
            if message["type"] == "http.response.start" and not recorded:
                recorded = True
                status = message["status"]
                if mutation or status in DENIED or _flagged(scope):
                    self.record(scope, status)  # before the client can see the answer
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            if mutation and not recorded:
                self.record(scope, 500)
            raise

    def denied(self, scope: Scope, status: int) -> None:
        """The data plane's hook: it answered ``status`` (401 or 403) on its own."""
        self.record(scope, status)

    def record(self, scope: Scope, status: int) -> None:
        try:
            self._record(scope, status)
        except Exception:  # the answer still goes out; the log says what was not recorded
            log.exception("could not record the audit event of %s %s (%d)", scope.get("method"),
                          scope.get("path"), status)

    def _record(self, scope: Scope, status: int) -> None:
        method: str = scope["method"]
        template, params = self.route_of(method, scope["path"])
        denied = status in DENIED or _flagged(scope)
        if template in NOT_AUDITED and not denied:
            return
        state: Mapping[str, Any] = scope.get("state") or {}
        principal: Principal | None = state.get("principal")
        if template is None:
            action, target = f"unmatched.{method.lower()}", scope["path"][:UNMATCHED_PATH]
        else:
            action = action_name(method, template)
            target = state.get(TARGET_KEY) or "/".join(params.values())
        self.log.append(AuditEvent(
            at=time.time(), namespace=principal.namespace if principal else "",
            actor=principal.actor if principal else "anonymous", action=action, target=target,
            source=_source(scope), result=Result.DENIED if denied else result_of(status),
            status=status, request_id=str(state.get("request_id", ""))))

    def route_of(self, method: str, path: str) -> tuple[str | None, dict[str, str]]:
        """The template of the route ``path`` matches (one that takes ``method`` first, as the
        router would), and its path parameters."""
        if self._templates is None:
            paths: dict[str, dict[str, Any]] = self.app.openapi()["paths"]
            self._templates = [(template, compile_path(template)[0],
                                frozenset(m.upper() for m in operations))
                               for template, operations in paths.items()]
        other: tuple[str, dict[str, str]] | None = None
        for template, pattern, methods in self._templates:
            found = pattern.match(path)
            if found is None:
                continue
            if method in methods or (method == "HEAD" and "GET" in methods):
                return template, found.groupdict()
            if other is None:
                other = template, found.groupdict()
        return other or (None, {})
