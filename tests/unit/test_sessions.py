"""Browser-session tokens: what they name, their expiry, tampering, the bootstrap key and
master-key rotation; and the ``auth.browser_session_ttl_s`` setting."""

from __future__ import annotations

import pytest

from stratus.security.masterkey import Keyring, MasterKey
from stratus.security.sessions import BOOTSTRAP, SessionSigner, session_ttl

NOW = 1_800_000_000.0


def signer(keyring: Keyring | None = None, admin_key: str = "admin-key") -> SessionSigner:
    return SessionSigner(keyring or Keyring([MasterKey.generate()], "env", None), admin_key, 3600)


def test_a_token_names_the_key_and_its_expiry_and_verifies() -> None:
    sessions = signer()
    issued = sessions.issue("sk_0123456789ab", NOW)
    assert issued is not None
    token, session = issued
    assert token.startswith("v1.sk_0123456789ab.") and session.expires_at == int(NOW + 3600)
    assert sessions.verify(token, NOW + 10) == session
    assert sessions.verify(token, NOW + 3600) == "session expired: sign in again"


def test_the_key_s_own_expiry_shortens_the_session() -> None:
    sessions = signer()
    issued = sessions.issue("sk_0123456789ab", NOW, not_after=NOW + 60)
    assert issued is not None and issued[1].expires_at == int(NOW + 60)
    assert sessions.issue("sk_0123456789ab", NOW, not_after=NOW - 1) is None


def test_any_change_to_a_token_is_refused() -> None:
    sessions = signer()
    issued = sessions.issue("sk_0123456789ab", NOW)
    assert issued is not None
    version, key_id, expires, kid, mac = issued[0].split(".")
    for forged in (f"{version}.sk_ba9876543210.{expires}.{kid}.{mac}",
                   f"{version}.{key_id}.{int(expires) + 1}.{kid}.{mac}",
                   f"{version}.{BOOTSTRAP}.{expires}.{kid}.{mac}",
                   f"{version}.{key_id}.{expires}.{kid}.{'A' * 43}"):
        assert sessions.verify(forged, NOW) == "invalid session cookie"
    assert sessions.verify("sk_0123456789ab_secret", NOW) == "malformed session cookie"
    other = signer()  # another server's master key
    assert other.verify(issued[0], NOW) == "invalid session cookie"


def test_a_changed_admin_key_ends_its_sessions() -> None:
    keyring = Keyring([MasterKey.generate()], "env", None)
    issued = signer(keyring, "first").issue(BOOTSTRAP, NOW)
    assert issued is not None
    assert signer(keyring, "first").verify(issued[0], NOW) == issued[1]
    assert signer(keyring, "second").verify(issued[0], NOW) == "invalid session cookie"


def test_sessions_outlive_a_rotation_until_the_old_master_key_is_retired() -> None:
    keyring = Keyring([MasterKey.generate()], "env", None)
    sessions = signer(keyring)
    issued = sessions.issue("sk_0123456789ab", NOW)
    assert issued is not None
    keyring.promote(MasterKey.generate())
    assert sessions.verify(issued[0], NOW) == issued[1]
    fresh = sessions.issue("sk_0123456789ab", NOW)
    assert fresh is not None and fresh[0].split(".")[3] == keyring.primary.kid
    keyring.retire_others()
    assert sessions.verify(issued[0], NOW) == "invalid session cookie"
    assert sessions.verify(fresh[0], NOW) == fresh[1]


@pytest.mark.parametrize(("section", "expected"), [
    ({}, 8 * 3600), ({"browser_session_ttl_s": 600}, 600), ({"browser_session_ttl_s": 90.5}, 90)])
def test_the_session_lifetime_setting(section: dict[str, object], expected: int) -> None:
    assert session_ttl(section) == expected


@pytest.mark.parametrize("value", [0, 59, 8 * 24 * 3600, "1h", True, None])
def test_a_bad_session_lifetime_stops_the_server(value: object) -> None:
    with pytest.raises(ValueError, match="browser_session_ttl_s"):
        session_ttl({"browser_session_ttl_s": value})
