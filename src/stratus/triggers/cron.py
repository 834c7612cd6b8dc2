"""When a schedule fires: its cron expression in its time zone, the ticks due now since it last
fired, what the catch-up policy makes of the ones missed while the server was down, and the next
wake-up. Pure: every time is passed in (epoch seconds)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from stratus.errors import BadRequest

MAX_CATCH_UP = 100  # catch-up "all" runs at most this many missed ticks (the latest ones)
MAX_ON_TIME = 1000  # ticks due at one wake-up while running (a stalled loop): at most these


class CatchUp(enum.StrEnum):
    """What runs of the ticks missed while the server was down."""

    NONE = "none"  # skip them
    ONE = "one"  # run once (as the latest one)
    ALL = "all"  # run each, the latest MAX_CATCH_UP at most


@dataclass(frozen=True, slots=True)
class Cron:
    """A parsed cron expression (5 fields, or 6 with croniter's trailing seconds field) and
    the time zone its fields are read in."""

    expression: str
    zone: ZoneInfo

    @classmethod
    def parse(cls, expression: str, timezone: str) -> Cron:
        """BadRequest (400) for an expression that does not parse or an unknown time zone."""
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise BadRequest(f"unknown time zone {timezone!r}; use an IANA name such as "
                             "'UTC' or 'Europe/Paris'") from None
        try:
            croniter(expression, datetime.now(zone))
        except (ValueError, KeyError) as exc:  # croniter's errors are ValueErrors
            raise BadRequest(f"cron expression {expression!r} does not parse: {exc}") from None
        return cls(expression, zone)

    def after(self, moment: float) -> float:
        """The first tick strictly after ``moment``."""
        found: datetime = croniter(self.expression, self._at(moment)).get_next(datetime)
        return found.timestamp()

    def before(self, moment: float) -> float:
        """The last tick strictly before ``moment``."""
        found: datetime = croniter(self.expression, self._at(moment)).get_prev(datetime)
        return found.timestamp()

    def _at(self, moment: float) -> datetime:
        # A zone-aware start: croniter then steps wall-clock fields through DST changes.
        return datetime.fromtimestamp(moment, self.zone)


@dataclass(frozen=True, slots=True)
class Plan:
    fire: list[float]  # the ticks to run now, oldest first
    fired_through: float | None  # the new last-fired time (skipped ticks count); None: unchanged
    next_at: float  # the next tick after now: when to wake up


def plan(cron: Cron, since: float, now: float, online_since: float, policy: CatchUp) -> Plan:
    """The ticks in (``since``, ``now``]: those at or after ``online_since`` (the server was up)
    all fire; those before it were missed, and ``policy`` says which of them run.

    ``since`` is the last fired tick (or the schedule's creation time)."""
    missed: list[float] = []
    if online_since > since:
        wanted = {CatchUp.NONE: 1, CatchUp.ONE: 1, CatchUp.ALL: MAX_CATCH_UP}[policy]
        cursor = min(online_since, now + 1e-6)  # ticks strictly before this one
        while len(missed) < wanted:
            tick = cron.before(cursor)
            if tick <= since:
                break
            missed.append(tick)
            cursor = tick
        missed.reverse()
    on_time: list[float] = []
    tick = cron.after(max(since, online_since - 1e-6))
    while tick <= now and len(on_time) < MAX_ON_TIME:
        on_time.append(tick)
        tick = cron.after(tick)
    next_at = tick if tick > now else cron.after(now)
    due = missed + on_time
    if not due:
        return Plan([], None, next_at)
    if policy is CatchUp.NONE:
        fire = on_time
    elif policy is CatchUp.ONE:
        fire = on_time or missed[-1:]
    else:
        fire = due
    return Plan(fire, due[-1], next_at)
