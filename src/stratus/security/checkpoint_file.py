"""The audit checkpoint file, ``<data-dir>/audit-checkpoints.jsonl``: append-only lines, each
synced before the next, MAC'd under a key derived from the current master key, and re-MAC'd
under the new one when the master key rotates."""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path

from stratus.security.checkpoints import LABEL, Checkpoint, Damaged, writer_id
from stratus.security.crypto import derive_key
from stratus.security.masterkey import Keyring, fsync_dir
from stratus.security.rotation import Rewrapped

log = logging.getLogger("stratus.audit")


class CheckpointFile:
    """Shared by the audit writer's thread (``append``), verification (``read``) and a
    rotation (``rewrap``); one lock keeps a line from landing in a file being replaced."""

    def __init__(self, path: Path, keyring: Keyring) -> None:
        self.path = path
        self.keyring = keyring
        self.writer = writer_id(socket.gethostname(), str(path.resolve()))
        self._lock = threading.Lock()
        self._keys: dict[str, bytes] = {}

    def key_for(self, kid: str) -> bytes | None:
        """The checkpoint key derived from the held master key ``kid``; None if not held."""
        if kid not in self._keys:
            for master in self.keyring.keys:
                if master.kid == kid:
                    self._keys[kid] = derive_key(master.secret, LABEL)
        return self._keys.get(kid)

    def read(self) -> list[Checkpoint | Damaged]:
        """Every line in file order; an absent file reads as empty."""
        with self._lock:
            try:
                text = self.path.read_text(errors="replace")
            except FileNotFoundError:
                return []
        lines: list[Checkpoint | Damaged] = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                lines.append(Checkpoint.parse(line))
            except ValueError:
                lines.append(Damaged(n, line))
        return lines

    def last_seq(self) -> int:
        """Where the next line continues: past any line that claims a seq, genuine or not,
        so no two lines share one."""
        return max((line.seq for line in self.read() if isinstance(line, Checkpoint)), default=0)

    def append(self, seq: int, record_id: int, record_hash: str, at: float) -> Checkpoint:
        with self._lock:  # the key is chosen here: a rotation re-MACs only after it switched
            master = self.keyring.primary
            key = self.key_for(master.kid)
            assert key is not None  # the primary is held
            checkpoint = Checkpoint(seq, record_id, record_hash, at, master.kid).signed(
                key, master.kid)
            created = not self.path.exists()
            _write_synced(self.path, checkpoint.line(), os.O_APPEND)
            if created:
                fsync_dir(self.path.parent)
        return checkpoint

    # -- master key rotation (security.rotation.WrappedKeys) ---------------------------------
    def kids_in_use(self) -> set[str]:
        """The held keys that MAC some line. A line under a key not held cannot be re-MAC'd
        and need not stop the server: verification reports it."""
        held = set(self.keyring.kids)
        return {line.kid for line in self.read() if isinstance(line, Checkpoint)} & held

    def rewrap(self, keyring: Keyring) -> Rewrapped:
        """Re-MAC under the primary key every line whose MAC holds under its own, so the
        retired key is not needed to check them; any other line stays as it is, and stays
        reported, rather than be laundered by a fresh MAC."""
        primary = keyring.primary
        key = self.key_for(primary.kid)
        assert key is not None
        result = Rewrapped()
        with self._lock:
            try:
                text = self.path.read_text(errors="replace")
            except FileNotFoundError:
                return result
            out = []
            for n, line in enumerate(text.splitlines(keepends=True), 1):
                try:
                    checkpoint = Checkpoint.parse(line)
                except ValueError:
                    if line.strip():
                        result.unreadable.append(f"audit checkpoint file line {n}")
                    out.append(line)
                    continue
                own = self.key_for(checkpoint.kid)
                if own is None or not checkpoint.valid(own):
                    result.unreadable.append(f"audit checkpoint {checkpoint.seq}")
                    out.append(line)
                elif checkpoint.kid == primary.kid:
                    out.append(line)
                else:
                    out.append(checkpoint.signed(key, primary.kid).line())
                    result.rewrapped += 1
            self._replace("".join(out))
        if result.unreadable:
            log.warning("audit checkpoints not re-MAC'd (damaged, forged, or under a key not "
                        "held): %s",
                        ", ".join(result.unreadable))
        return result

    def _replace(self, text: str) -> None:
        staging = self.path.with_name(self.path.name + ".tmp")
        _write_synced(staging, text, os.O_TRUNC)
        os.replace(staging, self.path)
        fsync_dir(self.path.parent)


def _write_synced(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | mode, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(text.encode())
        handle.flush()
        os.fsync(handle.fileno())
