"""JWT bearer tokens: HS256 with a shared secret or RS256 with a public key, configured in the
``auth.jwt`` section; configurable claims name the namespace, the role and the priority."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from stratus.resilience.priority import Priority, priority_named
from stratus.security.roles import GLOBAL_NAMESPACE, Role

ALGORITHMS = ("HS256", "RS256")


@dataclass(frozen=True, slots=True)
class TokenClaims:
    subject: str
    namespace: str  # ``*``: every namespace (only with the admin role)
    role: Role
    # Under load shedding: the priority without a header, and the most one may ask for.
    priority: Priority = Priority.NORMAL


@dataclass(frozen=True)
class JwtConfig:
    algorithm: str
    key: str | bytes  # the HS256 secret, or the RS256 public key in PEM
    namespace_claim: str = "namespace"
    role_claim: str = "role"
    subject_claim: str = "sub"
    priority_claim: str = "stratus_priority"
    issuer: str | None = None
    audience: str | None = None
    leeway_s: float = 0.0
    require_exp: bool = True


def jwt_config(section: dict[str, Any]) -> JwtConfig | None:
    """The ``jwt`` part of the ``auth`` config section, or None when JWT is not configured.

    ``secret`` / ``secret_env`` / ``secret_file`` give an HS256 secret; ``public_key_file``
    (or ``public_key``) an RS256 key. Bad values fail the server's start.
    """
    raw = section.get("jwt")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError("auth.jwt must be a mapping")
    known = {"algorithm", "secret", "secret_env", "secret_file", "public_key", "public_key_file",
             "namespace_claim", "role_claim", "subject_claim", "priority_claim", "issuer",
             "audience", "leeway_s", "require_exp"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"auth.jwt has unknown keys {unknown}; known: {sorted(known)}")
    algorithm = str(raw.get("algorithm", "HS256"))
    if algorithm not in ALGORITHMS:
        raise ValueError(f"auth.jwt.algorithm must be one of {ALGORITHMS}, not {algorithm!r}")
    key: str | bytes
    if algorithm == "HS256":
        if raw.get("secret_env"):
            key = os.environ.get(str(raw["secret_env"]), "")
        elif raw.get("secret_file"):
            key = Path(str(raw["secret_file"])).read_text().strip()
        else:
            key = str(raw.get("secret", ""))
        if len(key) < 32:
            raise ValueError("auth.jwt: an HS256 secret must be at least 32 characters")
    else:
        pem = raw.get("public_key") or (Path(str(raw["public_key_file"])).read_text()
                                        if raw.get("public_key_file") else "")
        if "PUBLIC KEY" not in str(pem):
            raise ValueError("auth.jwt: RS256 needs public_key_file (PEM)")
        key = str(pem)
    return JwtConfig(
        algorithm=algorithm, key=key,
        namespace_claim=str(raw.get("namespace_claim", "namespace")),
        role_claim=str(raw.get("role_claim", "role")),
        subject_claim=str(raw.get("subject_claim", "sub")),
        priority_claim=str(raw.get("priority_claim", "stratus_priority")),
        issuer=raw.get("issuer"), audience=raw.get("audience"),
        leeway_s=float(raw.get("leeway_s", 0.0)), require_exp=bool(raw.get("require_exp", True)),
    )


def looks_like_jwt(token: bytes) -> bool:
    return token.count(b".") == 2 and token.startswith(b"eyJ")


class JwtVerifier:
    def __init__(self, config: JwtConfig) -> None:
        self.config = config
        required = ["exp"] if config.require_exp else []
        self._options: dict[str, Any] = {"require": required, "verify_aud": config.audience is not None}

    def verify(self, token: str) -> TokenClaims | str:
        """The token's claims, or why it is refused (signature, expiry, not-before, claims)."""
        config = self.config
        try:
            claims = jwt.decode(token, config.key, algorithms=[config.algorithm],
                                audience=config.audience, issuer=config.issuer,
                                leeway=config.leeway_s, options=self._options)  # type: ignore[arg-type]
        except jwt.ExpiredSignatureError:
            return "token expired"
        except jwt.ImmatureSignatureError:
            return "token not yet valid"
        except jwt.InvalidTokenError as exc:
            return f"invalid token: {exc}"
        namespace = claims.get(config.namespace_claim)
        role = claims.get(config.role_claim)
        subject = claims.get(config.subject_claim)
        if not isinstance(namespace, str) or not namespace:
            return f"token lacks the {config.namespace_claim!r} claim"
        try:
            parsed = Role(str(role))
        except ValueError:
            return f"token's {config.role_claim!r} claim must be one of {[r.value for r in Role]}"
        if namespace == GLOBAL_NAMESPACE and parsed is not Role.ADMIN:
            return "only an admin token can be global"
        asked = claims.get(config.priority_claim)
        try:  # without the claim, normal: an issuer grants critical explicitly
            priority = Priority.NORMAL if asked is None else priority_named(str(asked))
        except ValueError:
            return f"token's {config.priority_claim!r} claim must be low, normal or critical"
        return TokenClaims(str(subject or "anonymous"), namespace, parsed, priority)
