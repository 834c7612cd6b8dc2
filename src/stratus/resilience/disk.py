"""Which of the server's writers (metadata, artifacts, usage, audit) last failed for lack of
space: set by a writer when its disk is full, cleared by its next write that succeeds."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from stratus.errors import storage_full

WRITERS = ("metadata", "artifacts", "usage", "audit")


class DiskHealth:
    """Shared by the writers (some on threads of their own) and read by ``/readyz``. A writer
    is full from its first write refused for space until one of its writes succeeds: no clock
    decides it, so space freed is seen at the next write, without a restart."""

    def __init__(self) -> None:
        self._full: dict[str, str] = {}
        self._lock = threading.Lock()

    def failed(self, writer: str, message: str) -> None:
        with self._lock:
            self._full[writer] = message

    def succeeded(self, writer: str) -> None:
        if writer in self._full:  # the common case reads without the lock
            with self._lock:
                self._full.pop(writer, None)

    @property
    def full(self) -> dict[str, str]:
        """Each failing writer and its last error, in ``WRITERS`` order."""
        with self._lock:
            return {name: self._full[name] for name in WRITERS if name in self._full}

    @contextmanager
    def writing(self, writer: str) -> Iterator[None]:
        """Around one write of ``writer``: an OSError of a full disk is told and raised as the
        507 (``InsufficientStorage``); a write that completes clears it."""
        try:
            yield
        except OSError as exc:
            full = storage_full(exc)
            if full is None:
                raise
            self.failed(writer, full.message)
            raise full from exc
        self.succeeded(writer)
