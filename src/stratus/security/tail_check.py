"""What the hash chain cannot see from the inside, checked against the MAC'd checkpoints: a tail
cut off (truncated), a tail replaced by a forged chain (rewritten), and checkpoints taken out."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from stratus.security.audit import AuditRecord
from stratus.security.checkpoints import OPEN, Checkpoint, Damaged, parse_announcement


class Kind(enum.StrEnum):
    TRUNCATED = "truncated"
    REWRITTEN = "rewritten"
    MISSING_CHECKPOINT = "missing_checkpoint"
    FORGED_CHECKPOINT = "forged_checkpoint"
    UNKNOWN_KEY = "unknown_key"  # MAC'd under a master key this server does not hold


@dataclass(frozen=True, slots=True)
class Finding:
    kind: Kind
    reason: str
    checkpoint: int | None = None  # its seq
    record: int | None = None


@dataclass(frozen=True, slots=True)
class WriterState:
    """What the running writer knows, which no file holds: it catches a checkpoint file cut or
    removed under it, and records cut since its last checkpoint."""

    id: str
    last_seq: int  # the last checkpoint it wrote, or found in the file at start
    head: tuple[int, str] | None  # (id, hash) of the last record it wrote or chained onto


@dataclass(frozen=True, slots=True)
class _Anchor:
    id: int
    hash: str
    by: str
    seq: int | None


class TailCheck:
    """Feed it the records in id order through ``watch`` (as ``audit.verify`` reads them, so the
    log is read once), then ``finish``. Only checkpoints whose MAC holds serve as anchors."""

    def __init__(self, lines: Sequence[Checkpoint | Damaged],
                 key_for: Callable[[str], bytes | None], writer: WriterState) -> None:
        self.findings: list[Finding] = []
        self.valid = self._authentic(lines, key_for)
        self.count = len(lines)
        self._writer = writer
        self.last_seq = max((c.seq for c in self.valid), default=0)
        self._gaps()
        anchors = [_Anchor(c.id, c.hash, f"checkpoint {c.seq}", c.seq) for c in self.valid]
        if writer.head is not None:
            anchors.append(_Anchor(*writer.head, "this server's last record", None))
        self._anchors = sorted(anchors, key=lambda anchor: anchor.id)
        self._next = 0
        self._last_id = 0
        self._absent: list[_Anchor] = []
        self._differ: list[_Anchor] = []
        self._claims: list[tuple[str, int, int]] = []  # this writer's (action, record, seq)

    def _authentic(self, lines: Sequence[Checkpoint | Damaged],
                   key_for: Callable[[str], bytes | None]) -> list[Checkpoint]:
        valid = []
        for n, line in enumerate(lines, 1):
            if isinstance(line, Damaged):
                self._add(Kind.FORGED_CHECKPOINT, f"line {n} of the checkpoint file is not a "
                                                  f"checkpoint: {line.text[:80]!r}")
                continue
            key = key_for(line.kid)
            if key is None:
                self._add(Kind.UNKNOWN_KEY, f"checkpoint {line.seq} is MAC'd under master key "
                                            f"{line.kid}, which this server does not hold", line.seq)
            elif not line.valid(key):
                self._add(Kind.FORGED_CHECKPOINT, f"checkpoint {line.seq} (line {n}) fails its "
                                                  f"MAC: it was edited or forged", line.seq, line.id)
            else:
                valid.append(line)
        return valid

    def _gaps(self) -> None:
        expected = 1
        for checkpoint in self.valid:
            if checkpoint.seq > expected:
                self._add(Kind.MISSING_CHECKPOINT, f"{_span('checkpoint', expected, checkpoint.seq - 1)} "
                                                   f"gone from the file", expected)
            elif checkpoint.seq < expected:
                self._add(Kind.FORGED_CHECKPOINT, f"checkpoint {checkpoint.seq} is repeated or "
                                                  f"out of order", checkpoint.seq, checkpoint.id)
            expected = max(expected, checkpoint.seq + 1)
        if self._writer.last_seq > self.last_seq:
            where = ("the checkpoint file is missing or empty" if self.count == 0 else
                     f"{_span('checkpoint', self.last_seq + 1, self._writer.last_seq)} gone "
                     f"from the file")
            self._add(Kind.MISSING_CHECKPOINT, f"{where}, but this server wrote checkpoints up "
                                               f"to {self._writer.last_seq}", self.last_seq + 1)

    def _add(self, kind: Kind, reason: str, checkpoint: int | None = None,
             record: int | None = None) -> None:
        self.findings.append(Finding(kind, reason, checkpoint, record))

    def watch(self, records: Iterable[AuditRecord]) -> Iterator[AuditRecord]:
        for record in records:
            self._see(record)
            yield record

    def _see(self, record: AuditRecord) -> None:
        self._last_id = record.id
        anchors = self._anchors
        while self._next < len(anchors) and anchors[self._next].id <= record.id:
            anchor = anchors[self._next]
            if anchor.id < record.id:
                self._absent.append(anchor)
            elif anchor.hash != record.hash:
                self._differ.append(anchor)
            self._next += 1
        claim = parse_announcement(record.event)
        if claim is not None and claim[1] == self._writer.id:
            self._claims.append((claim[0], record.id, claim[2]))

    def finish(self) -> list[Finding]:
        cut = self._anchors[self._next:]
        if cut:
            last = max(cut, key=lambda anchor: (anchor.id, anchor.seq is not None))
            ends = (f"the log ends at record {self._last_id}" if self._last_id else "the log is empty")
            self._add(Kind.TRUNCATED, f"{ends}, but {last.by} vouches for record {last.id}: "
                                      f"{_span('record', self._last_id + 1, last.id)} cut from "
                                      f"its end", last.seq, self._last_id + 1)
        for anchor in self._absent:
            self._add(Kind.TRUNCATED, f"record {anchor.id}, which {anchor.by} vouches for, is "
                                      f"missing", anchor.seq, anchor.id)
        if self._differ:
            first = min(self._differ, key=lambda anchor: (anchor.id, anchor.seq is None))
            more = f" ({len(self._differ)} anchors disagree)" if len(self._differ) > 1 else ""
            self._add(Kind.REWRITTEN, f"record {first.id} is not the record {first.by} vouches "
                                      f"for (its hash differs): the log was rewritten from record "
                                      f"{first.id} or earlier{more}", first.seq, first.id)
        self._check_claims()
        return self.findings

    def _check_claims(self) -> None:
        """Each start and clean stop of this server is a record naming the checkpoint written
        right after it: the file must hold that checkpoint, vouching for that record. So a file
        removed or cut while the server was stopped shows, unless the log was cut back too."""
        by_seq = {checkpoint.seq: checkpoint for checkpoint in self.valid}
        for n, (action, record_id, seq) in enumerate(self._claims):
            when = f"this server's {'start' if action == OPEN else 'stop'} at record {record_id}"
            found = by_seq.get(seq)
            if found is None:
                if n == len(self._claims) - 1 and seq > self._writer.last_seq:
                    continue  # its checkpoint is being written now
                self._add(Kind.MISSING_CHECKPOINT, f"checkpoint {seq}, which vouches for {when}, "
                                                   f"is gone from the file", seq, record_id)
            elif found.id != record_id:
                self._add(Kind.MISSING_CHECKPOINT, f"checkpoint {seq} vouches for record "
                                                   f"{found.id}, not for {when}: the checkpoint "
                                                   f"file was replaced or cut", seq, record_id)


def _span(noun: str, first: int, last: int) -> str:
    return f"{noun} {first} is" if first == last else f"{noun}s {first} to {last} are"
