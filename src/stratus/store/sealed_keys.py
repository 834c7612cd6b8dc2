"""The wrapped data keys beside sealed blobs (``<digest>.key``): which master keys wrap them,
and re-wrapping them under the primary one when the master key rotates."""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

from stratus.errors import IntegrityError
from stratus.security.crypto import WrappedKey
from stratus.security.masterkey import Keyring, MasterKeyError
from stratus.security.rotation import Rewrapped

DIGEST = re.compile(r"[0-9a-f]{64}")


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, durably: a crash leaves the old or the new, never half."""
    temporary = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(temporary, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def wrapped_keys(blobs: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(blobs.glob("*/*.key")):
        digest = path.name.removesuffix(".key")
        if DIGEST.fullmatch(digest):
            yield digest, path


def kids_in_use(blobs: Path) -> set[str]:
    kids = set()
    for _, path in wrapped_keys(blobs):
        with contextlib.suppress(FileNotFoundError, IntegrityError):
            kids.add(WrappedKey.from_json(path.read_text()).kid)
    return kids


def rewrap(blobs: Path, keyring: Keyring) -> Rewrapped:
    """Re-wrap every data key that the primary master key does not wrap yet. The blobs are
    not touched: only their small ``.key`` files are replaced, atomically."""
    result = Rewrapped()
    for digest, path in wrapped_keys(blobs):
        with keyring.writing():
            try:
                wrapped = WrappedKey.from_json(path.read_text())
                if wrapped.kid == keyring.primary.kid:
                    continue
                data_key = keyring.unwrap(wrapped, digest)
            except FileNotFoundError:
                continue  # collected meanwhile
            except (IntegrityError, MasterKeyError) as exc:
                result.unreadable.append(f"blob {digest[:12]}: {exc.message}")
                continue
            write_atomically(path, keyring.wrap(data_key, digest).to_json())
        result.rewrapped += 1
    return result
