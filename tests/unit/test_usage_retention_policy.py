"""The usage retention policy, pure: which records are due for a given time now, the minutes
they are rolled into, and sums that answer a report over whole minutes as the records do."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from stratus.store.retention import (
    DEFAULT_RETENTION_S,
    RUN_EVERY_S,
    MinuteSums,
    RolledRecord,
    cutoff,
    minute_of,
    roll_up,
    run_every,
)

NOW = 1_800_000_000.0 + 37.25  # a time 37.25 s into a minute


def _record(started_at: float, *, namespace: str = "team", deployment: str = "d",
            revision: int = 1, duration: float = 0.5, gbs: float = 0.25, prompt: int = 0,
            completion: int = 0, cold: bool = False, status: int = 200,
            shadow: bool = False) -> RolledRecord:
    return (namespace, deployment, revision, started_at, duration, gbs, prompt, completion,
            cold, status, shadow)


def test_records_are_due_from_the_start_of_the_minute_a_retention_ago() -> None:
    due = cutoff(NOW, DEFAULT_RETENTION_S)
    assert due == 1_800_000_000.0 - 7 * 86_400  # NOW less a week, down to its minute
    assert due is not None and due % 60 == 0
    # None is kept for less than the retention: the cutoff never passes NOW less it.
    assert due <= NOW - DEFAULT_RETENTION_S < due + 60
    assert cutoff(NOW + 22.75, DEFAULT_RETENTION_S) == due + 60  # the next minute, once it ends
    assert cutoff(NOW, 90.0) == minute_of(NOW - 90)


def test_no_retention_keeps_every_record() -> None:
    assert cutoff(NOW, 0) is None
    assert cutoff(NOW, -5) is None
    assert cutoff(NOW, math.inf) is None


def test_the_pruner_runs_every_five_minutes_or_twice_a_short_retention() -> None:
    assert run_every(DEFAULT_RETENTION_S) == RUN_EVERY_S == 300
    assert run_every(120) == 60
    assert run_every(0.5) == 1.0


def test_minutes_are_unix_seconds_on_the_minute() -> None:
    assert minute_of(120.0) == 120
    assert minute_of(179.999) == 120
    assert minute_of(-0.5) == -60


def test_records_are_summed_per_revision_and_minute_as_reports_count_them() -> None:
    sums = roll_up([
        _record(600.0, duration=1.0, gbs=0.5, prompt=3, completion=4, cold=True),
        _record(659.9, status=500, shadow=True),
        _record(660.0, status=499),  # the next minute; a 4xx is not an error
        _record(610.0, revision=2, status=503),
        _record(610.0, namespace="other"),
    ])
    assert set(sums) == {("team", "d", 1, 600), ("team", "d", 1, 660), ("team", "d", 2, 600),
                         ("other", "d", 1, 600)}
    assert sums["team", "d", 1, 600] == MinuteSums(
        requests=2, duration_s=1.5, gb_seconds=0.75, prompt_tokens=3, completion_tokens=4,
        cold_starts=1, errors=1, shadow_requests=1)
    assert sums["team", "d", 1, 660].errors == 0
    assert sums["team", "d", 2, 600].errors == 1
    assert roll_up([]) == {}


_records = st.lists(st.builds(
    _record, st.floats(0, 3_600, allow_nan=False), revision=st.integers(1, 3),
    duration=st.floats(0, 10), gbs=st.floats(0, 10), prompt=st.integers(0, 1000),
    completion=st.integers(0, 1000), cold=st.booleans(), status=st.sampled_from([200, 404, 500]),
    shadow=st.booleans()), max_size=60)


@given(_records, st.integers(0, 60), st.integers(0, 60))
def test_a_period_of_whole_minutes_sums_the_same_from_records_or_rollups(
        records: list[RolledRecord], first: int, length: int) -> None:
    since, until = first * 60, (first + length) * 60
    inside = [r for r in records if since <= r[3] < until]
    rolled = [s for (_, _, _, minute), s in roll_up(records).items() if since <= minute < until]
    assert sum(s.requests for s in rolled) == len(inside)
    assert math.isclose(sum(s.gb_seconds for s in rolled), sum(r[5] for r in inside),
                        rel_tol=1e-9, abs_tol=1e-9)
    assert sum(s.prompt_tokens for s in rolled) == sum(r[6] for r in inside)
    assert sum(s.errors for s in rolled) == sum(r[9] >= 500 for r in inside)
    assert sum(s.cold_starts for s in rolled) == sum(r[8] for r in inside)
