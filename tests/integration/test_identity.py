"""API keys and JWTs against a real server: minting, scopes, roles, expiry, revocation, and
every way a credential can be wrong."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from server import APPS, TEST_ENV, StratusServer
from stratus.cli.bundle import build_bundle

ECHO = "app.py:Echo"


def _pem_pair() -> tuple[bytes, bytes]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    return private_pem, public_pem


PRIVATE, PUBLIC = _pem_pair()
OTHER_PRIVATE, _ = _pem_pair()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StratusServer]:
    data = tmp_path_factory.mktemp("identity")
    (data / "jwt.pub").write_bytes(PUBLIC)
    config = {"auth": {"jwt": {"algorithm": "RS256", "public_key_file": str(data / "jwt.pub"),
                               "namespace_claim": "tenant", "role_claim": "stratus_role",
                               "issuer": "https://idp.example"}}}
    (data / "stratus.yaml").write_text(yaml.safe_dump(config))
    instance = StratusServer(data, TEST_ENV)
    instance.start()
    yield instance
    instance.stop()


def client(server: StratusServer, token: str, namespace: str | None = None) -> httpx.Client:
    return server.client_as(token, namespace)


def make_key(server: StratusServer, namespace: str, role: str, **extra: Any) -> str:
    return server.mint_key(namespace, role, **extra)[1]


def token(claims: dict[str, Any], key: bytes = PRIVATE, algorithm: str = "RS256") -> str:
    now = int(time.time())
    full = {"sub": "alice", "iss": "https://idp.example", "iat": now, "exp": now + 300, **claims}
    return jwt.encode(full, key, algorithm=algorithm)


def deploy(http: httpx.Client, server: StratusServer, name: str) -> httpx.Response:
    bundle = build_bundle(APPS / "basic")
    # Uploaded as the caller (a namespace deploys only what it uploaded); a role that may not
    # upload is refused here, and then by the deploy.
    http.put(f"/api/bundles/{bundle.digest}", content=bundle.data)
    return http.post("/api/deployments", json={"name": name, "code": {"bundle": bundle.digest,
                                                                      "entrypoint": ECHO}})


def test_cli_mints_a_key_that_is_shown_once_and_stored_hashed(server: StratusServer) -> None:
    result = server.cli("keys", "create", "--namespace", "team-a", "--role", "developer",
                        "--expires-in", "1d", "--description", "ci")
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("sk_") and len(key) > 50
    with client(server, key) as http:
        assert deploy(http, server, "idp-echo").status_code == 200
        assert http.get("/api/deployments").json()["deployments"][0]["name"] == "idp-echo"
    listing = server.cli("keys", "ls", "--json").stdout
    key_id = key[:15]
    assert key_id in listing and key[16:] not in listing
    assert '"state": "active"' in listing
    # The secret is nowhere in the database: only its hash is.
    for path in server.data_dir.rglob("*.db*"):
        assert key[16:].encode() not in path.read_bytes()


def test_revoked_expired_malformed_and_wrong_keys_are_401(server: StratusServer) -> None:
    key = make_key(server, "team-a", "viewer")
    short = make_key(server, "team-a", "viewer", expires_in_s=1)
    with client(server, key) as http:
        assert http.get("/api/deployments").status_code == 200
    key_id = key[:15]
    server.cli("keys", "revoke", key_id)
    time.sleep(1.1)
    wrong_secret = key[:16] + "x" * (len(key) - 16)
    cases = {key: "revoked", short: "expired", wrong_secret: "invalid", "sk_123": "malformed",
             "sk_" + "0" * 12 + "_nope": "invalid", "Zm9vYmFy": "invalid"}
    for credential, why in cases.items():
        with client(server, credential) as http:
            response = http.get("/api/deployments")
            assert response.status_code == 401, (credential, response.text)
            assert why in response.json()["error"]["message"]
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert http.post("/api/deployments/idp-echo/invoke", json={}).status_code == 401
    missing = httpx.get(f"{server.url}/api/deployments")
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "unauthorized"
    assert server.http.delete(f"/api/keys/{key_id}").json()["state"] == "revoked"
    assert server.http.delete("/api/keys/sk_000000000000").status_code == 404


def test_roles_are_enforced_on_control_and_data_plane(server: StratusServer) -> None:
    developer = make_key(server, "team-r", "developer")
    invoker = make_key(server, "team-r", "invoker")
    viewer = make_key(server, "team-r", "viewer")
    with client(server, developer) as http:
        assert deploy(http, server, "roles-echo").status_code == 200
        assert http.post("/api/keys", json={"role": "viewer"}).status_code == 403
    with client(server, invoker) as http:
        assert http.post("/api/deployments/roles-echo/invoke", json={"x": 1}).status_code == 200
        denied = http.get("/api/deployments")
        assert denied.status_code == 403 and denied.json()["error"]["type"] == "forbidden"
        assert deploy(http, server, "roles-other").status_code == 403
    with client(server, viewer) as http:
        assert http.get("/api/deployments/roles-echo").status_code == 200
        refused = http.post("/api/deployments/roles-echo/invoke", json={})
        assert refused.status_code == 403 and "invoke" in refused.json()["error"]["message"]
        assert http.delete("/api/deployments/roles-echo").status_code == 403
        assert http.get("/metrics").status_code == 403  # spans every namespace: global only
    assert server.http.get("/metrics").status_code == 200


def test_a_namespaced_key_sees_only_its_namespace(server: StratusServer) -> None:
    admin_a = make_key(server, "team-x", "admin")
    with client(server, admin_a) as http:
        assert http.get("/api/deployments").status_code == 200
        elsewhere = http.get("/api/deployments", headers={"x-stratus-namespace": "team-y"})
        assert elsewhere.status_code == 404
        assert http.post("/api/keys", json={"namespace": "team-y", "role": "viewer"}).status_code == 404
        assert http.post("/api/keys", json={"namespace": "*", "role": "admin"}).status_code == 404
        own = http.post("/api/keys", json={"role": "invoker"})
        assert own.status_code == 201 and own.json()["namespace"] == "team-x"
        listed = {key["namespace"] for key in http.get("/api/keys").json()["keys"]}
        assert listed == {"team-x"}
    everything = {key["namespace"] for key in server.http.get("/api/keys").json()["keys"]}
    assert {"team-x", "team-a"} <= everything
    assert server.http.post("/api/keys", json={"namespace": "*", "role": "viewer"}).status_code == 400
    bad = server.http.post("/api/keys", json={"namespace": "Not Valid", "role": "admin"})
    assert bad.status_code == 400
    assert server.http.post("/api/keys", json={"role": "root"}).status_code == 400


def test_jwt_claims_map_to_namespace_and_role(server: StratusServer) -> None:
    good = token({"tenant": "team-j", "stratus_role": "developer"})
    with client(server, good) as http:
        assert deploy(http, server, "jwt-echo").status_code == 200
        assert http.get("/api/deployments").json()["deployments"][0]["name"] == "jwt-echo"
        assert http.get("/api/deployments", headers={"x-stratus-namespace": "team-a"}).status_code == 404
    with client(server, token({"tenant": "*", "stratus_role": "admin"}), "team-j") as http:
        assert http.get("/api/deployments/jwt-echo").status_code == 200
    with client(server, token({"tenant": "team-j", "stratus_role": "viewer"})) as http:
        assert http.delete("/api/deployments/jwt-echo").status_code == 403


@pytest.mark.parametrize("case", ["expired", "not_yet_valid", "other_key", "hs256_confusion",
                                  "alg_none", "no_role", "bad_role", "wrong_issuer", "no_exp",
                                  "global_viewer", "garbage"])
def test_bad_jwts_are_401(server: StratusServer, case: str) -> None:
    now = int(time.time())
    claims = {"tenant": "team-j", "stratus_role": "developer"}
    credential = {
        "expired": lambda: token({**claims, "exp": now - 10}),
        "not_yet_valid": lambda: token({**claims, "nbf": now + 600}),
        "other_key": lambda: token(claims, OTHER_PRIVATE),
        "hs256_confusion": lambda: _hs256_with_public_key(claims, now),
        "alg_none": lambda: jwt.encode({**claims, "iss": "https://idp.example", "exp": now + 60},
                                       None, algorithm="none"),
        "no_role": lambda: token({"tenant": "team-j"}),
        "bad_role": lambda: token({"tenant": "team-j", "stratus_role": "root"}),
        "wrong_issuer": lambda: token({**claims, "iss": "https://evil.example"}),
        "no_exp": lambda: jwt.encode({**claims, "iss": "https://idp.example"}, PRIVATE, algorithm="RS256"),
        "global_viewer": lambda: token({"tenant": "*", "stratus_role": "viewer"}),
        "garbage": lambda: "eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl",
    }[case]()
    with client(server, credential) as http:
        response = http.get("/api/deployments")
        assert response.status_code == 401, response.text
        assert response.json()["error"]["type"] == "unauthorized"


def _hs256_with_public_key(claims: dict[str, Any], now: int) -> str:
    """The classic algorithm-confusion forgery: HMAC keyed with the server's public key."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps({**claims, "iss": "https://idp.example", "exp": now + 60}).encode())
    signature = hmac.new(PUBLIC, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


def test_an_unreadable_jwt_config_fails_the_start(tmp_path: Path) -> None:
    (tmp_path / "stratus.yaml").write_text(yaml.safe_dump({"auth": {"jwt": {"secret": "short"}}}))
    instance = StratusServer(tmp_path, TEST_ENV)
    with pytest.raises(AssertionError, match="at least 32 characters"):
        instance.start()
