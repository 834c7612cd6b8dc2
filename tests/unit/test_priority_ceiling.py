"""A caller's priority ceiling: what a key, a token or the bootstrap key allows its requests
under load shedding, and the one rule that lowers a header asking for more (the data plane's
routes and gRPC alike)."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from stratus.dispatch.outcomes import Outcome
from stratus.errors import BadRequest
from stratus.gateway.edge import Authenticator
from stratus.gateway.http import Call
from stratus.observe.access_line import access_line
from stratus.resilience.priority import (
    MAX_PRIORITY,
    Priority,
    priority_named,
    request_priority,
    request_queue_priority,
)
from stratus.security.keys import KeyRing, key_view, mint
from stratus.security.roles import Principal, Role
from stratus.security.tokens import JwtVerifier, jwt_config

LOW, NORMAL, CRITICAL = Priority.LOW, Priority.NORMAL, Priority.CRITICAL
SECRET = "s" * 40
BOOTSTRAP = "admin-key-for-the-tests"


@pytest.mark.parametrize(("header", "default", "ceiling", "expected"), [
    (None, NORMAL, NORMAL, NORMAL),  # no header: the caller's own
    (None, LOW, LOW, LOW),
    (None, CRITICAL, CRITICAL, CRITICAL),
    (None, NORMAL, CRITICAL, NORMAL),  # the bootstrap key: normal unless it asks
    ("critical", NORMAL, NORMAL, NORMAL),  # above the ceiling: lowered to it
    ("critical", LOW, LOW, LOW),
    ("normal", LOW, LOW, LOW),
    ("critical", NORMAL, CRITICAL, CRITICAL),
    ("low", CRITICAL, CRITICAL, LOW),  # below it: as asked
    ("normal", CRITICAL, CRITICAL, NORMAL),
    ("5", NORMAL, NORMAL, NORMAL),  # an integer by its sign, then the same ceiling
    ("-3", NORMAL, NORMAL, LOW),
    ("7", CRITICAL, CRITICAL, CRITICAL),
])
def test_a_header_is_lowered_to_the_ceiling_and_absent_means_the_callers_own(
        header: str | None, default: Priority, ceiling: Priority, expected: Priority) -> None:
    assert request_priority(header, default, ceiling) is expected


@pytest.mark.parametrize("header", ["urgent", "", "1001"])
def test_a_malformed_header_is_a_400_whatever_the_ceiling(header: str) -> None:
    for ceiling in Priority:
        with pytest.raises(BadRequest):
            request_priority(header, min(NORMAL, ceiling), ceiling)


@pytest.mark.parametrize(("value", "default", "ceiling", "expected"), [
    (None, NORMAL, NORMAL, 0),
    (None, LOW, LOW, -1),
    (None, CRITICAL, CRITICAL, 1),
    (None, NORMAL, CRITICAL, 0),
    ("10", NORMAL, NORMAL, 0),  # a normal key's 10 waits with the other normal work
    ("10", LOW, LOW, -1),
    ("-5", LOW, LOW, -5),  # below the ceiling the order asked for is kept
    ("-5", NORMAL, NORMAL, -5),
    ("1000", CRITICAL, CRITICAL, 1000),
    ("10", NORMAL, CRITICAL, 10),
])
def test_an_async_queue_priority_keeps_within_the_ceiling(
        value: str | None, default: Priority, ceiling: Priority, expected: int) -> None:
    assert request_queue_priority(value, default, ceiling) == expected


def test_an_async_queue_priority_out_of_range_is_a_400() -> None:
    for value in (str(MAX_PRIORITY + 1), "high"):
        with pytest.raises(BadRequest):
            request_queue_priority(value, LOW, LOW)


def test_priorities_by_name() -> None:
    assert [priority_named(n) for n in ("low", "normal", "CRITICAL")] == [LOW, NORMAL, CRITICAL]
    for bad in ("urgent", "", "1"):
        with pytest.raises(ValueError, match="low, normal or critical"):
            priority_named(bad)


def _authenticator(ring: KeyRing) -> Authenticator:
    config = jwt_config({"jwt": {"algorithm": "HS256", "secret": SECRET}})
    assert config is not None
    return Authenticator(BOOTSTRAP, ring, JwtVerifier(config))


def _principal(auth: Authenticator, credential: str) -> Principal:
    principal = auth.authenticate_values(f"Bearer {credential}".encode(), None)
    assert isinstance(principal, Principal), principal
    return principal


def _token(claims: dict[str, Any]) -> str:
    return jwt.encode({"sub": "bob", "exp": int(time.time()) + 60, "namespace": "team-a",
                       "role": "invoker", **claims}, SECRET, algorithm="HS256")


def test_each_credential_carries_its_priority_and_ceiling() -> None:
    low = mint("team-a", Role.INVOKER, created_by="bootstrap", priority=LOW)
    critical = mint("team-a", Role.INVOKER, created_by="bootstrap", priority=CRITICAL)
    plain = mint("team-a", Role.INVOKER, created_by="bootstrap")
    auth = _authenticator(KeyRing([low.record, critical.record, plain.record]))
    seen = {name: _principal(auth, credential) for name, credential in [
        ("low", low.key), ("critical", critical.key), ("plain", plain.key),
        ("bootstrap", BOOTSTRAP), ("jwt", _token({})),
        ("jwt-critical", _token({"stratus_priority": "critical"})),
        ("jwt-low", _token({"stratus_priority": "low"}))]}
    assert {name: (p.priority, p.max_priority) for name, p in seen.items()} == {
        "low": (LOW, LOW), "critical": (CRITICAL, CRITICAL), "plain": (NORMAL, NORMAL),
        "bootstrap": (NORMAL, CRITICAL), "jwt": (NORMAL, NORMAL),
        "jwt-critical": (CRITICAL, CRITICAL), "jwt-low": (LOW, LOW)}
    assert [key_view(m.record)["priority"] for m in (low, critical, plain)] == [
        "low", "critical", "normal"]


def test_a_token_with_a_bad_priority_claim_is_refused() -> None:
    auth = _authenticator(KeyRing())
    refused = auth.authenticate_values(f"Bearer {_token({'stratus_priority': 'urgent'})}".encode(),
                                       None)
    assert not isinstance(refused, Principal) and refused.status == 401
    assert "'stratus_priority' claim must be low, normal or critical" in refused.message
    config = jwt_config({"jwt": {"algorithm": "HS256", "secret": SECRET,
                                 "priority_claim": "tier"}})
    assert config is not None
    claims = JwtVerifier(config).verify(_token({"tier": "low", "stratus_priority": "critical"}))
    assert not isinstance(claims, str) and claims.priority is LOW


def _call(principal: Principal, headers: dict[str, str]) -> Call:
    return Call(principal, "r-1", ("echo",), headers, "", b"{}")


def test_a_call_is_served_at_its_callers_effective_priority() -> None:
    low = Principal("team-a", Role.INVOKER, "key:sk_1", priority=LOW, max_priority=LOW)
    critical = Principal("team-a", Role.INVOKER, "key:sk_2", priority=CRITICAL,
                         max_priority=CRITICAL)
    assert _call(low, {"x-stratus-priority": "critical"}).priority() is LOW
    assert _call(low, {}).priority() is LOW
    assert _call(critical, {}).priority() is CRITICAL
    assert _call(critical, {"x-stratus-priority": "low"}).priority() is LOW
    with pytest.raises(BadRequest):
        _call(low, {"x-stratus-priority": "urgent"}).priority()


def test_the_access_line_shows_the_effective_priority() -> None:
    outcome = Outcome(namespace="ns", deployment="d", revision=1, ok=True, latency_s=0.001,
                      shadow=False, at=1.0)
    assert '"priority":"normal"' in access_line(outcome)
    outcome.priority = LOW
    assert '"priority":"low"' in access_line(outcome)
