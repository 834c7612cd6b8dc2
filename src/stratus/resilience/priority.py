"""Request priorities for load shedding: which share of a revision's concurrency limit each
may use, so that critical traffic is shed last (pure)."""

from __future__ import annotations

import enum

from stratus.errors import BadRequest

PRIORITY_HEADER = "x-stratus-priority"


class Priority(enum.IntEnum):
    LOW = 0  # background work that can wait: asynchronous invocations, batch clients
    NORMAL = 1
    CRITICAL = 2


# The share of the limit a request of each priority may fill: the last tenth is kept for
# critical requests, and low ones stop at half, so under overload they go first.
SHARES: dict[Priority, float] = {Priority.LOW: 0.5, Priority.NORMAL: 0.9, Priority.CRITICAL: 1.0}


MAX_PRIORITY = 1000  # the asynchronous queue's integer priorities lie within ±this


def parse_priority(value: str | None) -> Priority:
    """The ``X-Stratus-Priority`` header's value: ``low``, ``normal`` or ``critical``, or the
    integer that the asynchronous routes take for their queue's order (from -1000 to 1000,
    default 0), read here by its sign: below 0 is low, 0 normal, above 0 critical. One header
    thus means the same on every route."""
    if value is None:
        return Priority.NORMAL
    text = value.strip()
    try:
        number = int(text)
    except ValueError:
        try:
            return Priority[text.upper()]
        except KeyError:
            raise BadRequest(f"{PRIORITY_HEADER} must be low, normal or critical, or an integer "
                             f"from -{MAX_PRIORITY} to {MAX_PRIORITY}, not {value!r}") from None
    return queue_priority_class(number)


def parse_queue_priority(value: str) -> int:
    """An asynchronous invocation's integer priority (higher is served first)."""
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"priority must be an integer, not {value!r}") from None
    if abs(number) > MAX_PRIORITY:
        raise BadRequest(f"priority must lie between -{MAX_PRIORITY} and {MAX_PRIORITY}")
    return number


def queue_priority_class(number: int) -> Priority:
    if abs(number) > MAX_PRIORITY:
        raise BadRequest(f"priority must lie between -{MAX_PRIORITY} and {MAX_PRIORITY}")
    return Priority.LOW if number < 0 else Priority.CRITICAL if number > 0 else Priority.NORMAL
