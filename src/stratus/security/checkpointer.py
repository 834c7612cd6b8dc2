"""The audit writer's side of checkpoints: it checkpoints its head every N records or T seconds,
and records in the chain each start and stop with the checkpoint that vouches for it."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from stratus.security.audit import AuditEvent, AuditRecord, Verdict, verify
from stratus.security.checkpoint_file import CheckpointFile
from stratus.security.checkpoints import CLOSE, OPEN, CheckpointPolicy, announcement
from stratus.security.tail_check import TailCheck, WriterState

log = logging.getLogger("stratus.audit")


class Checkpointer:
    """``opening``, ``wrote`` and ``tick`` run on the writer's thread; ``state`` and ``verify``
    on any other, and never count a checkpoint that is not yet in the file."""

    def __init__(self, file: CheckpointFile, policy: CheckpointPolicy) -> None:
        self.file = file
        self.policy = policy
        self.seq = 0  # the last checkpoint written, or found in the file at start
        self.head: AuditRecord | None = None  # the last record written, or chained onto
        self._pending = 0  # records written since the last checkpoint
        self._since = 0.0  # when the first of them was written (monotonic)

    def opening(self) -> AuditEvent:
        """The first record to write, and ``tick(force=True)`` right after it."""
        self.seq = self.file.last_seq()
        return announcement(OPEN, self.file.writer, self.seq + 1, time.time())

    def closing(self) -> AuditEvent:
        """The last record to write, and ``tick(force=True)`` right after it."""
        return announcement(CLOSE, self.file.writer, self.seq + 1, time.time())

    def wrote(self, tail: AuditRecord, count: int) -> None:
        if self._pending == 0:
            self._since = time.monotonic()
        self._pending += count
        self.head = tail

    def tick(self, force: bool = False) -> None:
        """Write a checkpoint of the head if the policy says so (or ``force``, at start and
        close) and any record is not yet covered. A failed write is retried next tick."""
        head = self.head
        if head is None or self._pending == 0:
            return
        if not force and not self.policy.due(self._pending, self._since, time.monotonic()):
            return
        try:
            self.file.append(self.seq + 1, head.id, head.hash, time.time())
        except OSError as exc:
            log.error("could not write audit checkpoint %d to %s: %s", self.seq + 1,
                      self.file.path, exc)
            return
        self.seq += 1
        self._pending = 0

    def state(self) -> WriterState:
        seq, head = self.seq, self.head  # seq first: its line is in the file before it moves
        return WriterState(self.file.writer, seq, (head.id, head.hash) if head else None)

    def verify(self, records: Iterable[AuditRecord]) -> tuple[Verdict, TailCheck]:
        """The chain as ``audit.verify`` checks it, and its tail against the checkpoints, in
        one pass over ``records``. Blocking: the file and the records are read here."""
        state = self.state()  # before the file: what it claims is already there
        check = TailCheck(self.file.read(), self.file.key_for, state)
        verdict = verify(check.watch(records))
        check.finish()
        return verdict, check
