"""Every route against every role, on a real server. The route list comes from the application's
own route table (FastAPI's routes, the framework's, the static mount and the data plane's), so a
route added without a declared permission fails here, by name."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, routing
from starlette.routing import Mount

from inprocess import control_plane
from server import TEST_ENV, StratusServer
from stratus.gateway.authz import DATA_PLANE, FRAMEWORK_ROUTES, MOUNTS, declared
from stratus.gateway.dataplane import ROUTES, openapi_paths
from stratus.security.roles import Permission, Role, allows

NAMESPACE = "matrix"
NOTHING = "matrix-nothing"
# Path parameters that must look valid to reach the lookup, yet name nothing that exists.
PARAMETERS = {"digest": "0" * 64, "trace_id": "0" * 32, "version": "1.0.0",
              "key_id": "sk_000000000000"}
# Routes whose `{}` body would do real work for a caller allowed to send it: that caller sends
# this body instead, which the route refuses (400) after the permission check. Routes that take
# no body (POST /api/master-key/rotate) do their work, on this module's own server.
GUARDED: dict[tuple[str, str], Any] = {
    ("POST", "/api/gc"): {"grace_s": -1},  # {} would collect the server's unreferenced blobs
}
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_PARAMETER = re.compile(r"{([^}]+)}")


@dataclass(frozen=True)
class Endpoint:
    method: str
    template: str  # as the route table has it, e.g. /api/deployments/{name}
    permission: Permission | None
    request_path: str = ""  # the mount's page; empty: the template with its parameters filled

    @property
    def label(self) -> str:
        return f"{self.method} {self.template}"

    @property
    def path(self) -> str:
        return self.request_path or _PARAMETER.sub(
            lambda m: PARAMETERS.get(m.group(1), NOTHING), self.template)

    def body(self, allowed: bool) -> Any:
        if self.method not in BODY_METHODS:
            return None
        return GUARDED.get((self.method, self.template), {}) if allowed else {}


@dataclass(frozen=True)
class Caller:
    name: str
    role: Role | None  # None: no credentials
    is_global: bool = False

    def may(self, permission: Permission) -> bool:
        if self.role is None:
            return permission is Permission.PUBLIC
        return allows(self.role, self.is_global, permission)


CALLERS = (
    *(Caller(role.value, role) for role in Role),
    Caller("global admin", Role.ADMIN, is_global=True),
    Caller("no credentials", None),
)


def _control_plane(app: FastAPI) -> Iterator[Endpoint]:
    for context in routing.iter_route_contexts(app.routes):
        route = context.original_route
        path = str(context.path)
        if isinstance(route, routing.APIRoute):
            for method in sorted(context.methods or ()):
                yield Endpoint(method, path, declared(context.dependencies))
        elif isinstance(route, Mount):
            yield Endpoint("GET", path + "/", MOUNTS.get(path), request_path=path + "/")
        else:
            for method in sorted(context.methods or ()):
                yield Endpoint(method, path, FRAMEWORK_ROUTES.get(path))


def _data_plane() -> Iterator[Endpoint]:
    """The data plane's table, as paths its OpenAPI entries name; a table entry without one is
    listed with its pattern, and fails."""
    templates = [template for template, entry in openapi_paths().items() if "post" in entry]
    for _suffix, pattern, adapter in ROUTES:
        matching = [t for t in templates if pattern.match(Endpoint("POST", t, None).path)]
        if not matching:
            yield Endpoint("POST", f"{pattern.pattern} ({adapter.__name__}, no OpenAPI entry)", None)
        for template in matching:
            yield Endpoint("POST", template, DATA_PLANE)


@cache
def endpoints() -> tuple[Endpoint, ...]:
    return (*_control_plane(control_plane()), *_data_plane())


def _collected() -> tuple[Endpoint, ...]:
    """The table for parametrising; a broken app fails the table's own test rather than the
    collection (which would stop every other test file too)."""
    try:
        return endpoints()
    except Exception:
        return ()


def _error_type(response: httpx.Response) -> str:
    """The Stratus error type in each protocol's error shape (see docs/architecture.md)."""
    error = response.json()["error"]
    if isinstance(error, str):  # /v2: the protocol's string, the type beside it
        return str(response.json()["error_type"])
    return str(error["code"] if response.url.path.startswith("/v1/") else error["type"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StratusServer]:
    """A server of its own: the global admin's calls may change server-wide state."""
    instance = StratusServer(tmp_path_factory.mktemp("matrix"), TEST_ENV)
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def clients(server: StratusServer) -> Iterator[dict[str, httpx.Client]]:
    made: dict[str, httpx.Client] = {}
    for caller in CALLERS:
        if caller.is_global:
            made[caller.name] = server.client_as(server.key, NAMESPACE, timeout=30)
        elif caller.role is not None:
            key = server.mint_key(NAMESPACE, caller.role.value)[1]
            made[caller.name] = server.client_as(key, timeout=30)
        else:
            made[caller.name] = httpx.Client(base_url=server.url, timeout=30)
    yield made
    for client in made.values():
        client.close()


def test_the_table_holds_every_kind_of_route() -> None:
    labels = {endpoint.label for endpoint in endpoints()}
    for expected in ("GET /api/deployments", "GET /openapi.json", "GET /ui/",
                     "POST /api/deployments/{name}/invoke", "POST /v1/chat/completions",
                     "GET /healthz"):
        assert expected in labels, f"{expected} missing from the route table: {sorted(labels)}"


@pytest.mark.parametrize("endpoint", _collected(), ids=lambda endpoint: endpoint.label)
def test_route_answers_each_role_as_its_permission_says(
        endpoint: Endpoint, clients: dict[str, httpx.Client]) -> None:
    permission = endpoint.permission
    assert permission is not None, f"route {endpoint.label} declares no permission"
    mismatches = []
    for caller in CALLERS:
        allowed = caller.may(permission)
        response = clients[caller.name].request(endpoint.method, endpoint.path,
                                                json=endpoint.body(allowed))
        status = response.status_code
        if allowed:
            ok = status not in (401, 403) and status < 500
            wanted = "neither 401, 403 nor 5xx"
        else:
            wanted_status = 401 if caller.role is None else 403
            ok = status == wanted_status
            wanted = str(wanted_status)
            if ok and endpoint.method != "HEAD":
                ok = _error_type(response) == ("unauthorized" if status == 401 else "forbidden")
        if not ok:
            mismatches.append(f"{caller.name}: got {status}, wanted {wanted}: "
                              f"{response.text[:200]}")
    assert not mismatches, (f"{endpoint.label} needs {permission.value}; "
                            + "; ".join(mismatches))
