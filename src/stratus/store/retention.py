"""The usage retention policy, pure (no I/O, no clock; the pruner passes the time in): which
per-request usage records are old enough to be rolled up into per-minute sums and deleted,
and what those sums are.

Per minute, not per hour: a report's period starts at any second (``--since 30d`` is now
less thirty days), and a rolled-up minute counts whole or not at all, so the resolution of
the sums bounds how far a report over old usage can be from one over the records. A minute
is also the capacity table's resolution, so old usage and old capacity line up, and the
rollups of a revision grow by at most 1,440 rows a day whatever its traffic (the capacity
table already grows by as much)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

BUCKET_S = 60  # a rollup's span: one minute
DEFAULT_RETENTION_S = 7 * 86_400.0  # per-request records are kept a week; rollups for good
RUN_EVERY_S = 300.0  # the pruner's period, unless the retention is shorter than twice this
ERROR_STATUS = 500  # a record at or above this status counts as an error in reports

# (namespace, deployment, revision, minute): one rollup row's key
MinuteKey = tuple[str, str, int, int]
# What the pruner reads back of each record it deletes, in this order: namespace,
# deployment, revision, started_at, duration_s, gb_seconds, prompt_tokens,
# completion_tokens, cold_start, status, shadow.
RolledRecord = tuple[str, str, int, float, float, float, int, int, bool, int, bool]


def cutoff(now: float, retention_s: float) -> float | None:
    """Records that started before this are due: rolled up, then deleted. The start of the
    minute ``retention_s`` before ``now``, so a minute goes whole, and none is kept for less
    than ``retention_s``. None when ``retention_s`` is 0 or less: records are kept for good."""
    if retention_s <= 0 or not math.isfinite(now - retention_s):
        return None
    return minute_of(now - retention_s)


def run_every(retention_s: float) -> float:
    """The pruner's period: ``RUN_EVERY_S``, or half a shorter retention (a second at least),
    so that no record outlives its retention by more than half of it."""
    return min(RUN_EVERY_S, max(1.0, retention_s / 2))


def minute_of(started_at: float) -> int:
    """The minute (Unix seconds, a multiple of 60) a record is rolled up into."""
    return math.floor(started_at / BUCKET_S) * BUCKET_S


@dataclass(slots=True)
class MinuteSums:
    """The sums of one minute's records of one revision: what the cost report adds up."""

    requests: int = 0
    duration_s: float = 0.0
    gb_seconds: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cold_starts: int = 0
    errors: int = 0
    shadow_requests: int = 0

    def add(self, record: RolledRecord) -> None:
        self.requests += 1
        self.duration_s += record[4]
        self.gb_seconds += record[5]
        self.prompt_tokens += record[6]
        self.completion_tokens += record[7]
        self.cold_starts += bool(record[8])
        self.errors += record[9] >= ERROR_STATUS
        self.shadow_requests += bool(record[10])


def roll_up(records: Iterable[RolledRecord]) -> dict[MinuteKey, MinuteSums]:
    """The records summed per revision and minute of their start."""
    sums: dict[MinuteKey, MinuteSums] = {}
    for record in records:
        key = (record[0], record[1], record[2], minute_of(record[3]))
        cell = sums.get(key)
        if cell is None:
            cell = sums[key] = MinuteSums()
        cell.add(record)
    return sums
