"""Checkpoints of the audit chain's head: each names a record (its id and hash) and carries an
HMAC under a key derived from the master key, so the log's tail can be checked against them."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from stratus.security.audit import AuditEvent, Result

LABEL = b"stratus/audit-checkpoint/v1"  # the HKDF info: this key MACs checkpoints and no more
FILE_NAME = "audit-checkpoints.jsonl"
OPEN, CLOSE = "audit.checkpoints.open", "audit.checkpoints.close"
_TARGET = re.compile(r"^writer ([0-9a-f]{12}) checkpoint (\d+)$")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One line of the checkpoint file. ``seq`` counts the file's lines from 1, so a line taken
    out leaves a gap; ``kid`` names the master key whose derived key made ``mac``."""

    seq: int
    id: int  # the record vouched for: the chain's head when it was written
    hash: str
    at: float
    kid: str
    mac: str = ""

    def body(self) -> bytes:
        values = {k: v for k, v in asdict(self).items() if k != "mac"}
        return json.dumps(values, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=True).encode()

    def signed(self, key: bytes, kid: str) -> Checkpoint:
        unsigned = replace(self, kid=kid, mac="")
        return replace(unsigned, mac=hmac.new(key, unsigned.body(), hashlib.sha256).hexdigest())

    def valid(self, key: bytes) -> bool:
        return hmac.compare_digest(self.signed(key, self.kid).mac, self.mac)

    def line(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")) + "\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """A line as written; ``ValueError`` for anything else (a torn or hand-made line)."""
        data: Any = json.loads(text)
        if not isinstance(data, dict) or set(data) != {"seq", "id", "hash", "at", "kid", "mac"}:
            raise ValueError("not a checkpoint")
        ints, texts = (data["seq"], data["id"]), (data["hash"], data["kid"], data["mac"])
        if not all(type(v) is int for v in ints) or not all(isinstance(v, str) for v in texts) \
                or not isinstance(data["at"], int | float):
            raise ValueError("not a checkpoint")
        return cls(data["seq"], data["id"], data["hash"], float(data["at"]), data["kid"],
                   data["mac"])


@dataclass(frozen=True, slots=True)
class Damaged:
    """A line of the checkpoint file that is not a checkpoint at all."""

    line: int
    text: str


class CheckpointPolicy(BaseModel):
    """The ``audit:`` section of the config file: a checkpoint after this many records, or this
    long after the first record not yet checkpointed, whichever comes first."""

    model_config = ConfigDict(extra="forbid")

    checkpoint_every: int = Field(100, ge=1)
    checkpoint_interval_s: float = Field(10.0, gt=0)

    def due(self, pending: int, since: float, now: float) -> bool:
        """Whether ``pending`` records, the oldest written at ``since``, need a checkpoint."""
        return pending > 0 and (pending >= self.checkpoint_every
                                or now - since >= self.checkpoint_interval_s)


def checkpoint_policy(section: Mapping[str, Any]) -> CheckpointPolicy:
    try:
        return CheckpointPolicy.model_validate(dict(section))
    except ValueError as exc:
        raise ValueError(f"invalid audit section of the config file: {exc}") from None


def writer_id(host: str, place: str) -> str:
    """The same for every start of one server (its host and checkpoint file's path), so the log
    tells its starts from another server's on a shared database."""
    return hashlib.sha256(f"{host}\x00{place}".encode()).hexdigest()[:12]


def announcement(action: str, writer: str, seq: int, at: float) -> AuditEvent:
    """What a writer records in the chain as it starts (``OPEN``) or stops (``CLOSE``): the
    checkpoint that will vouch for this very record, so the file must hold it, there."""
    return AuditEvent(at, "", "stratus", action, f"writer {writer} checkpoint {seq}", "",
                      Result.OK, 0)


def parse_announcement(event: AuditEvent) -> tuple[str, str, int] | None:
    """(action, writer, checkpoint) of an ``announcement``; None for any other event."""
    if event.action not in (OPEN, CLOSE):
        return None
    found = _TARGET.match(event.target)
    return (event.action, found[1], int(found[2])) if found else None
