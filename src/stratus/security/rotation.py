"""Rotating the master key: a new key wraps from now on, every stored data key is re-wrapped
under it, then the old key is retired. Sealed objects are never rewritten.

With the key file, the new key is written beside the old one (``master.key.next``) before
anything is re-wrapped and replaces it only at the end, so a rotation cut short resumes at
the next start. A key from ``STRATUS_MASTER_KEY`` cannot be rewritten by Stratus: the
operator puts the new key first (``NEW,OLD``), restarts, and rotates to re-wrap.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from stratus.errors import Conflict
from stratus.security.masterkey import (
    MASTER_KEY_ENV,
    Keyring,
    MasterKeyError,
    begin_file_rotation,
    finish_file_rotation,
    missing_key_message,
)

log = logging.getLogger("stratus.security")

_ROTATING = threading.Lock()


@dataclass
class Rewrapped:
    """What a rotation did to one store's data keys."""

    rewrapped: int = 0
    unreadable: list[str] = field(default_factory=list)  # objects no held key can unwrap


class WrappedKeys(Protocol):
    """A store of objects whose data keys are wrapped by the master key."""

    def kids_in_use(self) -> set[str]: ...

    def rewrap(self, keyring: Keyring) -> Rewrapped: ...


ENV_HOWTO = (f"the master key comes from {MASTER_KEY_ENV}, which Stratus cannot rewrite: "
             f"generate a key (openssl rand -base64 32), restart the server with "
             f"{MASTER_KEY_ENV}=NEW,OLD and rotate again to re-wrap every data key under NEW; "
             f"then drop OLD")


def _rewrap_all(keyring: Keyring, stores: dict[str, WrappedKeys]) -> dict[str, Rewrapped]:
    return {name: store.rewrap(keyring) for name, store in stores.items()}


def _report(keyring: Keyring, previous: list[str], results: dict[str, Rewrapped],
            retired: list[str]) -> dict[str, Any]:
    report: dict[str, Any] = {
        "master_key_id": keyring.primary.kid,
        "previous_key_ids": [kid for kid in previous if kid != keyring.primary.kid],
        "retired_key_ids": retired,
        "source": keyring.source,
        "key_file": str(keyring.key_file) if keyring.key_file else None,
        "rewrapped": {name: result.rewrapped for name, result in results.items()},
        "unreadable": [item for result in results.values() for item in result.unreadable],
    }
    if keyring.source == "env" and retired:
        report["next_step"] = (f"remove the retired key(s) from {MASTER_KEY_ENV}, leaving only "
                               f"the key with id {keyring.primary.kid}")
    return report


def rotate_master(keyring: Keyring, stores: dict[str, WrappedKeys]) -> dict[str, Any]:
    """Rotate, and report what was re-wrapped. Blocking: run it off the event loop."""
    if not _ROTATING.acquire(blocking=False):
        raise Conflict("a master key rotation is already running")
    try:
        previous = keyring.kids
        if keyring.source == "file":
            begin_file_rotation(keyring)
            results = _rewrap_all(keyring, stores)
            finish_file_rotation(keyring)
        else:
            stale = set[str]().union(*(store.kids_in_use() for store in stores.values()))
            if len(keyring.keys) == 1 and stale <= {keyring.primary.kid}:
                raise Conflict(ENV_HOWTO)
            results = _rewrap_all(keyring, stores)
        retired = keyring.retire_others()
        log.warning("master key rotated to %s (retired %s)", keyring.primary.kid,
                    ", ".join(retired) or "none")
        return _report(keyring, previous, results, retired)
    finally:
        _ROTATING.release()


def resume_rotation(keyring: Keyring, stores: dict[str, WrappedKeys]) -> dict[str, Any] | None:
    """Finish a rotation that a stop cut short (its next key file is still there)."""
    following = keyring.next_file
    if keyring.source != "file" or following is None or not following.is_file():
        return None
    log.warning("finishing an interrupted master key rotation to %s", keyring.primary.kid)
    return rotate_master(keyring, stores)


def check_keys(keyring: Keyring, stores: dict[str, WrappedKeys]) -> None:
    """Refuse to run on data sealed under a master key this server lacks: nothing under it
    could be read, and new data would be sealed under another key."""
    missing = set[str]().union(*(store.kids_in_use() for store in stores.values())) - set(keyring.kids)
    if missing:
        raise MasterKeyError(missing_key_message(missing, keyring))


def settle(keyring: Keyring, stores: dict[str, WrappedKeys]) -> None:
    """At start-up: finish a rotation cut short, then check every data key has its key."""
    resume_rotation(keyring, stores)
    check_keys(keyring, stores)
