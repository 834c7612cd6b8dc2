"""The master key that wraps every data key: from ``STRATUS_MASTER_KEY`` or the key file
``<data-dir>/master.key`` (generated, mode 0600, on first start), held in a keyring.

Each master key has an id (8 hex digits derived from it) that is stored with every data key
it wraps, so that a wrong or missing key is named in the error rather than guessed at.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stratus.errors import StratusError
from stratus.security.crypto import KEY_BYTES, WrappedKey, unwrap_key, wrap_key

log = logging.getLogger("stratus.security")

MASTER_KEY_ENV = "STRATUS_MASTER_KEY"
KEY_FILE = "master.key"
NEXT_KEY_FILE = "master.key.next"  # the new key while a rotation re-wraps the data keys


class MasterKeyError(StratusError):
    """A data key is wrapped by a master key this server does not hold."""

    status = 500
    type = "master_key_missing"


@dataclass(frozen=True)
class MasterKey:
    secret: bytes = field(repr=False)

    @property
    def kid(self) -> str:
        return key_id(self.secret)

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(os.urandom(KEY_BYTES))

    @classmethod
    def parse(cls, text: str, where: str) -> MasterKey:
        try:
            secret = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{where} is not base64") from None
        if len(secret) != KEY_BYTES:
            raise ValueError(f"{where} must be the base64 of {KEY_BYTES} random bytes "
                             f"(`openssl rand -base64 {KEY_BYTES}`), not of {len(secret)}")
        return cls(secret)

    def encoded(self) -> str:
        return base64.b64encode(self.secret).decode()


def key_id(secret: bytes) -> str:
    return hashlib.sha256(b"stratus master key id\x00" + secret).hexdigest()[:8]


class Keyring:
    """The master keys this server holds. The primary wraps new data keys; the others only
    unwrap (an old key during a rotation). ``writing`` serialises a wrap with its write, so a
    rotation never misses a data key wrapped under the key it retires."""

    def __init__(self, keys: list[MasterKey], source: str, key_file: Path | None) -> None:
        if not keys:
            raise ValueError("a keyring needs a key")
        self.keys = list(keys)
        self.source = source  # "env" or "file"
        self.key_file = key_file
        self._lock = threading.RLock()

    @property
    def primary(self) -> MasterKey:
        return self.keys[0]

    @property
    def kids(self) -> list[str]:
        return [key.kid for key in self.keys]

    @property
    def next_file(self) -> Path | None:
        return self.key_file.with_name(NEXT_KEY_FILE) if self.key_file is not None else None

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        with self._lock:
            yield

    def wrap(self, data_key: bytes, object_id: str) -> WrappedKey:
        primary = self.primary
        return wrap_key(primary.secret, primary.kid, data_key, object_id)

    def unwrap(self, wrapped: WrappedKey, object_id: str) -> bytes:
        for key in self.keys:
            if key.kid == wrapped.kid:
                return unwrap_key(key.secret, wrapped, object_id)
        raise MasterKeyError(missing_key_message({wrapped.kid}, self), detail=object_id)

    def promote(self, key: MasterKey) -> None:
        """Wrap with ``key`` from now on; keep the others for unwrapping."""
        with self._lock:
            self.keys = [key, *(k for k in self.keys if k.kid != key.kid)]

    def retire_others(self) -> list[str]:
        with self._lock:
            retired = self.kids[1:]
            self.keys = self.keys[:1]
        return retired


def missing_key_message(kids: set[str], keyring: Keyring) -> str:
    where = (f"{MASTER_KEY_ENV}" if keyring.source == "env"
             else f"the key file {keyring.key_file}")
    return (f"data is encrypted under master key {', '.join(sorted(kids))}, which this server "
            f"does not hold (it holds {', '.join(keyring.kids)} from {where}); restore the "
            f"right {KEY_FILE} or set {MASTER_KEY_ENV}=KEY (during a rotation, NEW,OLD)")


def _write_private(path: Path, text: str, exclusive: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_key_file(path: Path) -> MasterKey:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ValueError(f"the master key file {path} is readable by others (mode {mode:o}); "
                         f"chmod 600 it")
    return MasterKey.parse(path.read_text(), f"the master key file {path}")


def load_keyring(data_dir: Path, environ: Mapping[str, str] = os.environ,
                 encrypted_data: bool = False) -> Keyring:
    """The server's keyring; its key is logged by id and source, and where it was written
    when it was generated just now.

    ``STRATUS_MASTER_KEY`` holds one base64 key, or several separated by commas (the first
    wraps; the others are old keys that only unwrap, during a rotation). Without it the key
    file is used, and created when missing, unless ``encrypted_data`` says that data sealed
    under some earlier key exists: a fresh key could open none of it.
    """
    raw = environ.get(MASTER_KEY_ENV, "").strip()
    if raw:
        keys = [MasterKey.parse(part, f"{MASTER_KEY_ENV} (key {n + 1})")
                for n, part in enumerate(p for p in raw.split(",") if p.strip())]
        log.info("master key %s from %s", keys[0].kid, MASTER_KEY_ENV)
        return Keyring(keys, "env", None)
    path = data_dir / KEY_FILE
    following = path.with_name(NEXT_KEY_FILE)
    if path.is_file():
        keys = [_read_key_file(path)]
        if following.is_file():  # a rotation was interrupted: its new key already wraps
            keys.insert(0, _read_key_file(following))
        log.info("master key %s from %s", keys[0].kid, path)
        return Keyring(keys, "file", path)
    if encrypted_data or following.exists():
        raise ValueError(f"{data_dir} holds encrypted artifacts or secrets but no master key: "
                         f"restore {path} or set {MASTER_KEY_ENV}")
    data_dir.mkdir(parents=True, exist_ok=True)
    key = MasterKey.generate()
    _write_private(path, key.encoded(), exclusive=True)
    log.warning("generated the master key %s in %s (mode 0600): keep a copy apart from the "
                "data dir; without it no artifact or secret can be read", key.kid, path)
    return Keyring([key], "file", path)


def begin_file_rotation(keyring: Keyring) -> MasterKey:
    """Write the next key beside the current one (durably, before any data key is re-wrapped
    under it) and wrap with it from now on. An interrupted rotation resumes with its key."""
    assert keyring.key_file is not None and keyring.next_file is not None
    following = keyring.next_file
    if following.is_file():
        key = _read_key_file(following)
    else:
        key = MasterKey.generate()
        _write_private(following, key.encoded(), exclusive=True)
        fsync_dir(following.parent)
    keyring.promote(key)
    return key


def finish_file_rotation(keyring: Keyring) -> None:
    """Every data key is under the new key: make it the key file, atomically."""
    assert keyring.key_file is not None and keyring.next_file is not None
    os.replace(keyring.next_file, keyring.key_file)
    fsync_dir(keyring.key_file.parent)
