"""The audit log's hash chain: each record's sha256 covers its canonical JSON and the hash of the
record before it, so an edited, deleted or reordered record breaks the chain where it sits."""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, fields

GENESIS = "0" * 64  # the previous hash of record 1


class Result(enum.StrEnum):
    OK = "ok"  # 2xx and 3xx
    DENIED = "denied"  # 401 and 403
    ERROR = "error"  # anything else


def result_of(status: int) -> Result:
    if status in (401, 403):
        return Result.DENIED
    return Result.OK if 0 < status < 400 else Result.ERROR


# Longest text kept per field; longer values are cut before hashing, so what is stored is
# exactly what was hashed (PostgreSQL would refuse an over-long value outright).
LIMITS = {"namespace": 63, "actor": 200, "action": 120, "target": 400, "source": 64,
          "request_id": 128, "result": 16}


def _clip(value: str, limit: int) -> str:
    # PostgreSQL text cannot hold NUL; a path parameter can (%00).
    return value[:limit].replace("\x00", "\ufffd")


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """What happened, as the capture point saw it; the writer chains it into a record."""

    at: float  # Unix seconds
    namespace: str  # "" for a request that never authenticated
    actor: str  # the principal's actor, or "anonymous"
    action: str  # dotted, from the route template: "deployments.traffic.put"
    target: str  # the route's path parameters, e.g. the deployment's name
    source: str  # the client's address
    result: str  # a Result
    status: int  # the HTTP status
    request_id: str = ""

    def clipped(self) -> AuditEvent:
        """The event as it is stored and hashed: texts cut to their columns, the time a float
        (an int would read back from the float column as 1.0 and hash differently)."""

        def text(name: str) -> str:
            return _clip(str(getattr(self, name)), LIMITS[name])

        return AuditEvent(float(self.at), text("namespace"), text("actor"), text("action"),
                          text("target"), text("source"), text("result"), int(self.status),
                          text("request_id"))


def _values(event: AuditEvent) -> dict[str, object]:
    return {field.name: getattr(event, field.name) for field in fields(AuditEvent)}


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """A stored record: its position in the chain, the event, and the two hashes."""

    id: int
    event: AuditEvent
    prev_hash: str
    hash: str


def canonical(record_id: int, event: AuditEvent, prev_hash: str) -> bytes:
    """Sorted keys, no spaces, ASCII only: one byte string per record on any platform. Floats
    are written as Python's shortest round-trip repr, which a double column keeps exactly."""
    body = {**_values(event), "id": record_id, "prev_hash": prev_hash}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode()


def digest(record_id: int, event: AuditEvent, prev_hash: str) -> str:
    return hashlib.sha256(canonical(record_id, event, prev_hash)).hexdigest()


def chain(previous: AuditRecord | None, events: Iterable[AuditEvent]) -> list[AuditRecord]:
    """``events`` as the records that follow ``previous`` (``None``: the log is empty)."""
    last_id, last_hash = (previous.id, previous.hash) if previous else (0, GENESIS)
    records = []
    for event in events:
        event = event.clipped()
        last_id += 1
        record = AuditRecord(last_id, event, last_hash, digest(last_id, event, last_hash))
        records.append(record)
        last_hash = record.hash
    return records


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    records: int  # how many were read
    first_bad: int | None = None  # the id of the first record where the chain breaks
    reason: str | None = None
    head_id: int | None = None  # the newest record: keep (id, hash) elsewhere to catch a
    head_hash: str | None = None  # truncated tail, which no chain can see from the inside


def verify(records: Iterable[AuditRecord]) -> Verdict:
    """Check ``records`` in id order (streamed; nothing is kept but the last one). The first
    break is reported: a record whose content no longer matches its hash (edited), whose id
    skips (one before it was deleted), or whose previous hash is not its predecessor's."""
    expected_id, expected_prev = 1, GENESIS
    count = 0
    first_bad: int | None = None
    reason: str | None = None
    last: AuditRecord | None = None
    for record in records:
        count += 1
        last = record
        if first_bad is not None:
            continue  # keep counting; the first break is the one reported
        problem = _problem(record, expected_id, expected_prev)
        if problem is not None:
            first_bad, reason = record.id, problem
        expected_id, expected_prev = record.id + 1, record.hash
    return Verdict(first_bad is None, count, first_bad, reason,
                   last.id if last else None, last.hash if last else None)


def _problem(record: AuditRecord, expected_id: int, expected_prev: str) -> str | None:
    if record.id != expected_id:
        if record.id < expected_id:
            return f"record {record.id} is out of order (expected {expected_id})"
        missing = (f"record {expected_id} is" if record.id == expected_id + 1
                   else f"records {expected_id} to {record.id - 1} are")
        return f"{missing} missing before record {record.id}"
    if record.prev_hash != expected_prev:
        return (f"record {record.id} does not follow record {record.id - 1}: its previous hash "
                f"differs from that record's hash")
    if digest(record.id, record.event, record.prev_hash) != record.hash:
        return f"record {record.id} was altered: its content no longer matches its hash"
    return None
