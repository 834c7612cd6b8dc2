"""API key minting and checking, JWT verification and the role table: the pure rules."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime

import jwt
import pytest

from stratus.security.keys import KeyRing, mint, split_key
from stratus.security.roles import GRANTS, Permission, Role, allows
from stratus.security.tokens import JwtVerifier, jwt_config, looks_like_jwt

SECRET = "s" * 40


def test_a_minted_key_checks_and_only_its_hash_is_kept() -> None:
    minted = mint("team-a", Role.DEVELOPER, created_by="bootstrap")
    assert minted.key.startswith(minted.record.id + "_")
    assert minted.key.split("_", 2)[2] not in repr(minted.record)
    ring = KeyRing([minted.record])
    assert ring.check(minted.key.encode()) == minted.record
    assert mint("team-a", Role.DEVELOPER, created_by="x").key != minted.key


@pytest.mark.parametrize("token", [b"sk_", b"sk_abc", b"sk_0123456789ab", b"sk_0123456789abX",
                                   b"sk_0123456789ab_", b"bearer", b""])
def test_malformed_keys_are_refused(token: bytes) -> None:
    assert split_key(token) is None
    assert KeyRing().check(token) == "malformed API key"


def test_wrong_secret_revoked_and_expired_keys_are_refused() -> None:
    minted = mint("team-a", Role.VIEWER, created_by="x", expires_in_s=60)
    ring = KeyRing([minted.record])
    assert ring.check(minted.key.encode()[:-1] + b"!") == "invalid API key"
    assert ring.check(minted.key.encode(), now=time.time() + 61) == "API key expired"
    ring.put(replace(minted.record, revoked_at=datetime.now(UTC)))
    assert ring.check(minted.key.encode()) == "API key revoked"
    other = mint("team-a", Role.VIEWER, created_by="x")
    assert ring.check(other.key.encode()) == "invalid API key"  # unknown id: same answer


def test_only_admin_keys_can_be_global() -> None:
    with pytest.raises(ValueError):
        mint("*", Role.DEVELOPER, created_by="x")
    assert mint("*", Role.ADMIN, created_by="x").record.namespace == "*"


def test_the_role_table() -> None:
    assert GRANTS[Role.INVOKER] == {Permission.INVOKE}
    assert GRANTS[Role.VIEWER] == {Permission.READ}
    assert Permission.ADMIN not in GRANTS[Role.DEVELOPER]
    for role in Role:
        assert allows(role, False, Permission.PUBLIC) and allows(role, False, Permission.AUTHENTICATED)
        assert not allows(role, False, Permission.GLOBAL)
    assert allows(Role.ADMIN, True, Permission.GLOBAL)
    assert not allows(Role.VIEWER, True, Permission.GLOBAL)


def _verifier(**extra: object) -> JwtVerifier:
    config = jwt_config({"jwt": {"algorithm": "HS256", "secret": SECRET, **extra}})
    assert config is not None
    return JwtVerifier(config)


def _token(claims: dict[str, object], key: str = SECRET) -> str:
    return jwt.encode({"sub": "bob", "exp": int(time.time()) + 60, **claims}, key, algorithm="HS256")


def test_hs256_claims_map_to_namespace_and_role() -> None:
    claims = _verifier().verify(_token({"namespace": "team-b", "role": "invoker"}))
    assert not isinstance(claims, str)
    assert (claims.subject, claims.namespace, claims.role) == ("bob", "team-b", Role.INVOKER)
    custom = _verifier(namespace_claim="tenant", role_claim="grp")
    assert not isinstance(custom.verify(_token({"tenant": "t", "grp": "viewer"})), str)


@pytest.mark.parametrize(("claims", "key", "why"), [
    ({"namespace": "a", "role": "viewer", "exp": 1}, SECRET, "expired"),
    ({"namespace": "a", "role": "viewer", "nbf": "in ten minutes"}, SECRET, "not yet valid"),
    ({"namespace": "a", "role": "viewer"}, "t" * 40, "invalid token"),
    ({"role": "viewer"}, SECRET, "lacks"),
    ({"namespace": "a", "role": "owner"}, SECRET, "must be one of"),
    ({"namespace": "*", "role": "viewer"}, SECRET, "global"),
])
def test_bad_tokens_say_why(claims: dict[str, object], key: str, why: str) -> None:
    if claims.get("nbf") == "in ten minutes":  # at run time: collection may be long before
        claims = {**claims, "nbf": int(time.time()) + 600}
    result = _verifier().verify(_token(claims, key))
    assert isinstance(result, str) and why in result


def test_jwt_config_is_validated() -> None:
    assert jwt_config({}) is None
    for bad in ({"algorithm": "HS512", "secret": SECRET}, {"secret": "short"},
                {"algorithm": "RS256"}, {"secret": SECRET, "colour": "red"}):
        with pytest.raises(ValueError):
            jwt_config({"jwt": bad})
    assert looks_like_jwt(_token({}).encode()) and not looks_like_jwt(b"sk_abc")
