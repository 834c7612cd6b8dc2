"""Unit tests for replica floors: durations, cron schedules and the WithFloors wrapper."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stratus.autoscale.floors import Schedule, WithFloors
from stratus.autoscale.policy import Decision, ReplicaCounts
from stratus.dispatch.load import MetricSample
from stratus.spec import ScheduleSpec, parse_duration

UTC = ZoneInfo("UTC")
COUNTS = ReplicaCounts(ready=1, starting=0)


def parse(text: str) -> Schedule:
    """A schedule from its string form, as a deployment's spec gives it."""
    return Schedule.of(ScheduleSpec.model_validate(text))


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: float = 0.0,
       zone: str = "UTC") -> float:
    moment = datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(zone))
    return moment.timestamp() + second


# -- parse_duration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("0", 0.0), ("90s", 90.0), ("15m", 900.0), ("2h", 7200.0), ("9h5m", 32_700.0),
     ("1h30m15s", 5415.0), ("1m30s", 90.0), (" 15m ", 900.0), ("120m", 7200.0),
     ("30d", 2_592_000.0), ("1d2h", 93_600.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "  ", "abc", "5x", "1.5h", "-5", "5m10h", "h", "m5", "1w", "5h1d", "1 h", "5s5s"]
)
def test_parse_duration_rejects_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


# -- Schedule ------------------------------------------------------------------------------------


def test_string_form() -> None:
    schedule = parse("55 8 * * 1-5 for 9h5m keep 3")
    assert schedule == Schedule("55 8 * * 1-5", 32_700.0, 3, "UTC")
    assert schedule.describe() == "'55 8 * * 1-5' for 32700s keep 3"
    assert parse("  */15 * * * *   for 90  keep 0 ") == Schedule("*/15 * * * *", 90.0, 0)
    assert parse("@daily for 1h keep 2").cron == "@daily"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("55 8 * * 1-5 keep 3", "is not '<cron> for <duration> keep <replicas>'"),
        ("55 8 * * 1-5 for 1h", "is not '<cron> for <duration> keep <replicas>'"),
        ("for 1h keep 2", "is not '<cron> for <duration> keep <replicas>'"),
        ("0 9 * * * for 1h keep -1", "is not '<cron> for <duration> keep <replicas>'"),
        ("0 9 * * * for 1h keep two", "is not '<cron> for <duration> keep <replicas>'"),
        ("0 9 * * * for 1x keep 2", "is not a duration"),
        ("0 9 * * * for 0s keep 2", "greater than 0"),
        ("61 9 * * * for 1h keep 2", "not a valid cron expression"),
        ("every day for 1h keep 2", "not a valid cron expression"),
    ],
)
def test_string_form_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse(text)


@pytest.mark.parametrize("cron", ["", "not a cron", "61 * * * *", "* 24 * * *", "* * 32 * *", "* * * 13 *",
                                  "* * * *", "*/0 * * * *"])
def test_invalid_crons_are_rejected(cron: str) -> None:
    with pytest.raises(ValueError, match="not a valid cron expression"):
        Schedule(cron, 60.0, 1)


@pytest.mark.parametrize(("duration", "replicas"), [(0.0, 1), (-1.0, 1), (60.0, -1)])
def test_a_schedule_needs_a_positive_duration_and_replicas(duration: float, replicas: int) -> None:
    with pytest.raises(ValueError, match="positive duration"):
        Schedule("0 9 * * *", duration, replicas)


def test_unknown_timezones_are_rejected() -> None:
    with pytest.raises(KeyError):
        Schedule("0 9 * * *", 60.0, 1, "Mars/Olympus_Mons")


@pytest.mark.parametrize(
    ("moment", "active"),
    [
        ((2026, 3, 10, 21, 59, 59.0), False),
        ((2026, 3, 10, 22, 0, 0.0), True),  # the window opens when the cron fires
        ((2026, 3, 10, 23, 59, 59.0), True),
        ((2026, 3, 11, 0, 0, 0.0), True),  # across midnight
        ((2026, 3, 11, 1, 59, 59.5), True),
        ((2026, 3, 11, 2, 0, 0.0), False),  # and closes duration_s later
        ((2026, 3, 11, 12, 0, 0.0), False),
    ],
)
def test_active_inside_its_window_across_midnight(moment: tuple[int, ...], active: bool) -> None:
    year, month, day, hour, minute, second = moment
    schedule = Schedule("0 22 * * *", 4 * 3600.0, 2)
    assert schedule.active(at(year, month, day, hour, minute, second)) is active


def test_weekday_window_across_midnight_belongs_to_the_day_it_started() -> None:
    schedule = parse("0 22 * * 5 for 4h keep 3")  # Fridays 22:00 to Saturdays 02:00
    assert schedule.active(at(2026, 1, 2, 23))  # Friday
    assert schedule.active(at(2026, 1, 3, 1, 30))  # Saturday, in Friday's window
    assert not schedule.active(at(2026, 1, 3, 23))  # Saturday night: no window
    assert not schedule.active(at(2026, 1, 4, 1, 30))  # Sunday


def test_window_longer_than_the_period_is_always_open() -> None:
    schedule = Schedule("*/10 * * * *", 3600.0, 1)
    assert all(schedule.active(at(2026, 5, 1) + offset) for offset in range(0, 86_400, 337))


@pytest.mark.parametrize(
    ("zone", "day"),
    [("America/New_York", (2026, 1, 15)), ("America/New_York", (2026, 7, 15)),
     ("Europe/Paris", (2026, 1, 15)), ("Europe/Paris", (2026, 7, 15)), ("Asia/Kolkata", (2026, 1, 15))],
)
def test_active_in_a_non_utc_timezone(zone: str, day: tuple[int, int, int]) -> None:
    schedule = Schedule("0 9 * * *", 3600.0, 2, zone)
    assert schedule.active(at(*day, 9, 30, zone=zone))  # 09:30 on the zone's wall clock
    assert not schedule.active(at(*day, 8, 59, zone=zone))
    assert not schedule.active(at(*day, 10, 0, zone=zone))
    assert not schedule.active(at(*day, 9, 30, zone="UTC")) or zone == "UTC"


def test_active_across_midnight_in_a_non_utc_timezone() -> None:
    schedule = Schedule("0 23 * * *", 2 * 3600.0, 1, "Asia/Tokyo")  # 23:00 to 01:00 Tokyo time
    assert schedule.active(at(2026, 4, 1, 23, 30, zone="Asia/Tokyo"))
    assert schedule.active(at(2026, 4, 2, 0, 30, zone="Asia/Tokyo"))
    assert not schedule.active(at(2026, 4, 2, 1, 0, zone="Asia/Tokyo"))


# -- Schedule.active against a brute-force reading of the cron ----------------------------------


def field_matches(field: str, value: int) -> bool:
    for part in field.split(","):
        if part == "*":
            return True
        if part.startswith("*/"):
            if value % int(part[2:]) == 0:
                return True
        elif "-" in part:
            low, high = map(int, part.split("-"))
            if low <= value <= high:
                return True
        elif int(part) == value:
            return True
    return False


def cron_fires(cron: str, moment: datetime) -> bool:
    """Crons without both a day of month and a day of week restriction, read by hand."""
    minute, hour, day, month, weekday = cron.split()
    return (field_matches(minute, moment.minute) and field_matches(hour, moment.hour)
            and field_matches(day, moment.day) and field_matches(month, moment.month)
            and field_matches(weekday, (moment.weekday() + 1) % 7))


def fired_within(cron: str, zone: str, now: float, duration: float) -> bool:
    """Did the cron fire in (now - duration, now]? Minute by minute on the zone's wall clock."""
    minute = now - now % 60
    while minute > now - duration:
        if cron_fires(cron, datetime.fromtimestamp(minute, ZoneInfo(zone))):
            return True
        minute -= 60
    return False


SCHEDULE_CRONS = ["*/15 * * * *", "0 * * * *", "30 23 * * *", "0 9 * * 1-5", "45 6 * * 0", "0 0 1 * *",
                  "5,35 8-10 * * *"]
# Winter and summer stretches, away from the daylight-saving switches.
NO_DST_SWITCH = st.floats(at(2026, 1, 5), at(2026, 3, 1)) | st.floats(at(2026, 6, 1), at(2026, 9, 1))
ON_THE_MINUTE = st.integers(int(at(2026, 1, 5)) // 60, int(at(2026, 3, 1)) // 60).map(lambda m: m * 60.0)


@pytest.mark.parametrize("zone", [
    "UTC",
    "America/New_York",
    "Asia/Kolkata",
])
@settings(max_examples=150)
@given(cron=st.sampled_from(SCHEDULE_CRONS), duration=st.sampled_from([1.0, 60.0, 600.0, 3600.0, 7200.0]),
       now=NO_DST_SWITCH | ON_THE_MINUTE | ON_THE_MINUTE.map(lambda t: t - 1e-3))
def test_property_active_means_the_cron_fired_within_the_duration(
    zone: str, cron: str, duration: float, now: float
) -> None:
    schedule = Schedule(cron, duration, 1, zone)
    assert schedule.active(now) is fired_within(cron, zone, now, duration)


# -- WithFloors --------------------------------------------------------------------------------


class Fixed:
    """A stand-in policy that decides whatever it is told."""

    name = "fixed"

    def __init__(self, desired: int) -> None:
        self.desired = desired
        self.seen: list[MetricSample] = []

    def observe(self, sample: MetricSample) -> None:
        self.seen.append(sample)

    def decide(self, now: float, counts: ReplicaCounts) -> Decision:
        return Decision(self.desired, "inner", "inner-mode")


WORKDAYS = parse("0 9 * * 1-5 for 9h keep 4")
MONDAY_NOON = at(2026, 1, 5, 12)
MONDAY_NIGHT = at(2026, 1, 5, 22)


def test_floors_pass_observations_and_the_name_through() -> None:
    inner = Fixed(0)
    floored = WithFloors(inner, 0, [], 10)
    reading = MetricSample(t=1.0, interval_s=1.0, average_concurrency=0.0, peak_concurrency=0, arrivals=0,
                           queued=0)
    floored.observe(reading)
    assert inner.seen == [reading]
    assert floored.name == "fixed"


def test_no_floors_leave_the_decision_alone() -> None:
    decision = WithFloors(Fixed(3), 0, [], 10).decide(MONDAY_NOON, COUNTS)
    assert decision == Decision(3, "inner", "inner-mode")


def test_provisioned_replicas_are_always_warm() -> None:
    floored = WithFloors(Fixed(0), 2, [], 10)
    for now in (MONDAY_NOON, MONDAY_NIGHT):
        decision = floored.decide(now, COUNTS)
        assert (decision.desired, decision.mode) == (2, "inner-mode")
        assert decision.reason == "inner; floor 2 from provisioned 2"


def test_a_schedule_raises_the_floor_inside_its_window_only() -> None:
    floored = WithFloors(Fixed(1), 2, [WORKDAYS], 10)
    noon = floored.decide(MONDAY_NOON, COUNTS)
    assert noon.desired == 4
    assert "floor 4 from schedule '0 9 * * 1-5' for 32400s keep 4" in noon.reason
    night = floored.decide(MONDAY_NIGHT, COUNTS)
    assert night.desired == 2 and "provisioned 2" in night.reason


def test_the_highest_active_floor_wins() -> None:
    schedules = [Schedule("0 * * * *", 3600.0, 3), WORKDAYS, Schedule("0 0 * * *", 60.0, 9)]
    floored = WithFloors(Fixed(0), 1, schedules, 10)
    assert floored.floor(MONDAY_NOON) == (4, f"schedule {WORKDAYS.describe()}")
    assert floored.floor(MONDAY_NIGHT)[0] == 3
    assert floored.floor(at(2026, 1, 6, 0, 0, 30.0))[0] == 9


def test_floors_never_exceed_max_replicas() -> None:
    floored = WithFloors(Fixed(0), 50, [WORKDAYS], 3)
    assert floored.decide(MONDAY_NOON, COUNTS).desired == 3


def test_an_inner_decision_above_the_floor_stands() -> None:
    floored = WithFloors(Fixed(7), 2, [WORKDAYS], 10)
    assert floored.decide(MONDAY_NOON, COUNTS) == Decision(7, "inner", "inner-mode")


@given(inner=st.integers(0, 20), provisioned=st.integers(0, 20), max_replicas=st.integers(0, 20),
       schedules=st.lists(st.builds(Schedule, st.sampled_from(SCHEDULE_CRONS),
                                    st.sampled_from([60.0, 3600.0, 36_000.0]), st.integers(0, 20)),
                          max_size=3),
       now=st.floats(at(2026, 1, 1), at(2027, 1, 1)))
def test_property_decision_is_the_inner_one_raised_to_the_floor(
    inner: int, provisioned: int, max_replicas: int, schedules: list[Schedule], now: float
) -> None:
    decision = WithFloors(Fixed(inner), provisioned, schedules, max_replicas).decide(now, COUNTS)
    floor = max([provisioned] + [s.replicas for s in schedules if s.active(now)])
    assert decision.desired >= min(floor, max_replicas)
    assert decision.desired == max(inner, min(floor, max_replicas))
    assert decision.mode == "inner-mode"


def test_string_and_fields_describe_the_same_window() -> None:
    parsed = parse("30 17 * * * for 45m keep 1")
    start = datetime(2026, 2, 3, 17, 30, tzinfo=UTC)
    assert parsed.active(start.timestamp())
    assert parsed.active((start + timedelta(minutes=44, seconds=59)).timestamp())
    assert not parsed.active((start + timedelta(minutes=45)).timestamp())
