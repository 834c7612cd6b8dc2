"""The schedule policy with an injected clock: which ticks are due, in which time zone (across
both DST changes of Europe/Paris), what the catch-up policy runs of the ticks missed while the
server was down, and the next wake-up."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from stratus.errors import BadRequest
from stratus.triggers.cron import MAX_CATCH_UP, CatchUp, Cron, plan


def at(text: str) -> float:
    """An ISO time (UTC unless it says otherwise) as epoch seconds."""
    moment = datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def test_a_running_server_fires_each_due_tick_once_and_sleeps_until_the_next() -> None:
    cron = Cron.parse("*/5 * * * *", "UTC")
    up = at("2026-01-01T00:00:00")
    created = at("2026-01-01T00:01:00")
    early = plan(cron, created, at("2026-01-01T00:04:59"), up, CatchUp.NONE)
    assert early.fire == [] and early.fired_through is None
    assert iso(early.next_at) == "2026-01-01T00:05:00"
    due = plan(cron, created, at("2026-01-01T00:05:00.003"), up, CatchUp.NONE)
    assert [iso(t) for t in due.fire] == ["2026-01-01T00:05:00"]
    assert due.fired_through == at("2026-01-01T00:05:00")
    assert iso(due.next_at) == "2026-01-01T00:10:00"
    # Recorded as fired, the same tick is not due again.
    again = plan(cron, due.fired_through, at("2026-01-01T00:05:01"), up, CatchUp.NONE)
    assert again.fire == [] and iso(again.next_at) == "2026-01-01T00:10:00"
    # A stalled loop that wakes late while the server is up still runs every tick it slept by.
    late = plan(cron, due.fired_through, at("2026-01-01T00:21:00"), up, CatchUp.NONE)
    assert [iso(t) for t in late.fire] == ["2026-01-01T00:10:00", "2026-01-01T00:15:00",
                                           "2026-01-01T00:20:00"]


def test_nothing_before_the_schedule_was_created_fires() -> None:
    cron = Cron.parse("* * * * *", "UTC")
    created = at("2026-01-01T00:00:30")
    result = plan(cron, created, at("2026-01-01T00:00:40"), at("2025-12-01"), CatchUp.ALL)
    assert result.fire == [] and iso(result.next_at) == "2026-01-01T00:01:00"


def test_a_sixth_field_is_seconds_as_croniter_reads_it() -> None:
    cron = Cron.parse("* * * * * */2", "UTC")
    start = at("2026-01-01T00:00:00.5")
    result = plan(cron, start, at("2026-01-01T00:00:05"), start - 1, CatchUp.NONE)
    assert [iso(t) for t in result.fire] == ["2026-01-01T00:00:02", "2026-01-01T00:00:04"]
    assert iso(result.next_at) == "2026-01-01T00:00:06"


@pytest.mark.parametrize(("policy", "expected"), [
    (CatchUp.NONE, []),
    (CatchUp.ONE, ["03:00"]),
    (CatchUp.ALL, ["01:00", "02:00", "03:00"]),
])
def test_ticks_missed_while_down_go_by_the_catch_up_policy(policy: CatchUp,
                                                           expected: list[str]) -> None:
    cron = Cron.parse("0 * * * *", "UTC")
    last = at("2026-01-01T00:00:00")  # fired at midnight, then the server went down
    restarted = at("2026-01-01T03:30:00")
    result = plan(cron, last, restarted + 0.01, restarted, policy)
    assert [iso(t)[11:16] for t in result.fire] == expected
    # Skipped or run, the missed ticks are behind it: the next round finds none.
    assert result.fired_through == at("2026-01-01T03:00:00")
    assert iso(result.next_at) == "2026-01-01T04:00:00"
    assert plan(cron, result.fired_through, restarted + 1, restarted, policy).fire == []


def test_a_tick_on_time_after_start_up_fires_whatever_the_policy() -> None:
    cron = Cron.parse("0 * * * *", "UTC")
    restarted = at("2026-01-01T03:59:00")
    result = plan(cron, at("2026-01-01T00:00:00"), at("2026-01-01T04:00:00.01"), restarted,
                  CatchUp.NONE)
    assert [iso(t) for t in result.fire] == ["2026-01-01T04:00:00"]
    one = plan(cron, at("2026-01-01T00:00:00"), at("2026-01-01T04:00:00.01"), restarted,
               CatchUp.ONE)  # the on-time run is the one run: not two
    assert [iso(t) for t in one.fire] == ["2026-01-01T04:00:00"]


def test_catch_up_all_is_bounded_to_the_latest_ticks() -> None:
    cron = Cron.parse("* * * * * *", "UTC")  # every second
    last = at("2026-01-01T00:00:00")
    restarted = at("2026-01-02T00:00:00")  # a day down: 86,400 missed ticks
    result = plan(cron, last, restarted + 0.5, restarted, CatchUp.ALL)
    assert len(result.fire) == MAX_CATCH_UP + 1  # the latest 100 missed, and the on-time one
    assert iso(result.fire[0]) == "2026-01-01T23:58:20"
    assert iso(result.fire[-1]) == "2026-01-02T00:00:00"
    assert result.fired_through == restarted


def test_the_fields_are_read_in_the_schedule_time_zone_across_dst() -> None:
    cron = Cron.parse("0 9 * * *", "Europe/Paris")  # 09:00 in Paris: 08:00 UTC, 07:00 in summer
    up = at("2026-03-01T00:00:00")
    result = plan(cron, at("2026-03-27T12:00:00"), at("2026-03-31T12:00:00"), up, CatchUp.NONE)
    assert [iso(t) for t in result.fire] == [
        "2026-03-28T08:00:00",
        "2026-03-29T07:00:00",  # clocks went forward that night
        "2026-03-30T07:00:00",
        "2026-03-31T07:00:00",
    ]
    # A wall-clock time the spring change skips fires once that night, not never.
    skipped = Cron.parse("30 2 * * *", "Europe/Paris")
    night = plan(skipped, at("2026-03-28T12:00:00"), at("2026-03-29T12:00:00"), up, CatchUp.NONE)
    assert len(night.fire) == 1
    # In autumn the hour from 02:00 to 03:00 comes twice: an hourly schedule fires in each,
    # an hour apart in real time, never twice at one instant.
    hourly = Cron.parse("0 * * * *", "Europe/Paris")
    autumn = plan(hourly, at("2026-10-24T22:30:00"), at("2026-10-25T02:30:00"), up,
                  CatchUp.NONE)
    assert [iso(t) for t in autumn.fire] == ["2026-10-24T23:00:00", "2026-10-25T00:00:00",
                                             "2026-10-25T01:00:00", "2026-10-25T02:00:00"]
    assert len(set(autumn.fire)) == len(autumn.fire)


@pytest.mark.parametrize("expression", ["* * * *", "61 * * * *", "every minute", "",
                                        "* * * * * * * *", "*/0 * * * *"])
def test_an_expression_that_does_not_parse_is_a_400(expression: str) -> None:
    with pytest.raises(BadRequest, match="does not parse"):
        Cron.parse(expression, "UTC")


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "../etc/passwd", "UTC+2"])
def test_an_unknown_time_zone_is_a_400(zone: str) -> None:
    with pytest.raises(BadRequest, match="time zone"):
        Cron.parse("* * * * *", zone)
