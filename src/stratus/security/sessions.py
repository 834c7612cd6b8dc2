"""Browser sessions: the signed token a sign-in puts in the dashboard's cookie. It names the API
key and an expiry, never the key itself, and is MAC'd with a key derived from the master key.

Token: ``v1.<key id>.<expires, Unix s>.<master key id>.<HMAC-SHA256, base64url>``. The key id is
an API key's public prefix, or ``bootstrap`` for the server's admin key (whose MAC then also
covers a digest of that key, so a changed admin key ends its sessions). Whether the key is still
valid is the caller's check, on every use (``gateway.edge``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any

from stratus.security.crypto import derive_key
from stratus.security.masterkey import Keyring

LABEL = b"stratus/browser-session/v1"
VERSION = "v1"
BOOTSTRAP = "bootstrap"
DEFAULT_TTL_S = 8 * 3600
MIN_TTL_S, MAX_TTL_S = 60, 7 * 24 * 3600
_TOKEN = re.compile(r"v1\.(bootstrap|sk_[0-9a-f]{12})\.([0-9]{1,12})\.([0-9a-f]{8})\.([A-Za-z0-9_-]{43})")


@dataclass(frozen=True, slots=True)
class Session:
    key_id: str  # an API key's prefix, or ``bootstrap``
    expires_at: int  # Unix seconds


def session_ttl(section: dict[str, Any]) -> int:
    """``auth.browser_session_ttl_s`` of the config file: how long a sign-in lasts at most."""
    raw = section.get("browser_session_ttl_s", DEFAULT_TTL_S)
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not MIN_TTL_S <= raw <= MAX_TTL_S:
        raise ValueError(f"auth.browser_session_ttl_s must be a number of seconds from "
                         f"{MIN_TTL_S} to {MAX_TTL_S}, not {raw!r}")
    return int(raw)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class SessionSigner:
    """Signs and checks session tokens; keys are derived per master key, so a token signed
    before a rotation stays valid while its master key is still held."""

    def __init__(self, keyring: Keyring, bootstrap_key: str, ttl_s: int = DEFAULT_TTL_S) -> None:
        self.keyring = keyring
        self.ttl_s = ttl_s
        self._bootstrap_digest = hashlib.sha256(bootstrap_key.encode()).digest()
        self._keys: dict[str, bytes] = {}

    def _key(self, kid: str) -> bytes | None:
        """The session key derived from master key ``kid``; None once that key is retired."""
        if kid not in self.keyring.kids:
            return None
        if kid not in self._keys:
            for master in self.keyring.keys:
                if master.kid == kid:
                    self._keys[kid] = derive_key(master.secret, LABEL)
        return self._keys.get(kid)

    def _mac(self, key: bytes, key_id: str, expires_at: int, kid: str) -> str:
        message = f"{VERSION}.{key_id}.{expires_at}.{kid}".encode()
        if key_id == BOOTSTRAP:
            message += b"." + self._bootstrap_digest
        return _b64(hmac.new(key, message, hashlib.sha256).digest())

    def issue(self, key_id: str, now: float,
              not_after: float | None = None) -> tuple[str, Session] | None:
        """A token for ``key_id`` from ``now``, ending at the TTL or at ``not_after`` (the key's
        own expiry), whichever is first; None when that leaves nothing."""
        end = now + self.ttl_s if not_after is None else min(now + self.ttl_s, not_after)
        if int(end) <= now:
            return None
        session = Session(key_id, int(end))
        kid = self.keyring.primary.kid
        key = self._key(kid)
        assert key is not None  # the primary key is always held
        mac = self._mac(key, key_id, session.expires_at, kid)
        return f"{VERSION}.{key_id}.{session.expires_at}.{kid}.{mac}", session

    def verify(self, token: str, now: float) -> Session | str:
        """The session a token names, or why it is refused."""
        match = _TOKEN.fullmatch(token)
        if match is None:
            return "malformed session cookie"
        key_id, expires, kid, mac = match.groups()
        key = self._key(kid)
        if key is None or not hmac.compare_digest(mac, self._mac(key, key_id, int(expires), kid)):
            return "invalid session cookie"
        if int(expires) <= now:
            return "session expired: sign in again"
        return Session(key_id, int(expires))
