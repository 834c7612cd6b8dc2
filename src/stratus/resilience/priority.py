"""Request priorities for load shedding: which share of a revision's concurrency limit each
may use, so that critical traffic is shed last, and how high a caller may ask (pure)."""

from __future__ import annotations

import enum

from stratus.errors import BadRequest

PRIORITY_HEADER = "x-stratus-priority"


class Priority(enum.IntEnum):
    LOW = 0  # work that can wait: a batch client's key, async work queued below 0
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


def priority_named(name: str) -> Priority:
    """A caller's priority by name (``low``, ``normal``, ``critical``), as an API key and a
    JWT's claim give it; ValueError for anything else."""
    try:
        return Priority[name.upper()]
    except KeyError:
        raise ValueError(f"priority must be low, normal or critical, not {name!r}") from None


def request_priority(header: str | None, default: Priority, ceiling: Priority) -> Priority:
    """The priority a request is served at: the ``X-Stratus-Priority`` header's, or the
    caller's own (``default``) without one, and never above the caller's ``ceiling`` (what its
    API key or token allows). The data plane's routes and gRPC calls both ask this.

    A header asking for more than the ceiling is lowered to it, not refused: clients share
    code, and one sending ``critical`` on every call works with every key it is given, each
    getting what its key allows. A malformed header is still a 400 (``parse_priority``)."""
    asked = default if header is None else parse_priority(header)
    return min(asked, ceiling)


# An asynchronous invocation's integer priority for a caller's own class when it names none,
# and the highest integer each ceiling allows: the integers keep their order, their sign is
# the class (``queue_priority_class``).
QUEUE_DEFAULTS: dict[Priority, int] = {Priority.LOW: -1, Priority.NORMAL: 0, Priority.CRITICAL: 1}
QUEUE_CEILINGS: dict[Priority, int] = {Priority.LOW: -1, Priority.NORMAL: 0,
                                       Priority.CRITICAL: MAX_PRIORITY}


def request_queue_priority(value: str | None, default: Priority, ceiling: Priority) -> int:
    """An asynchronous invocation's integer priority under the same rule as
    ``request_priority``: the caller's class without a value, never above its ceiling's
    highest integer (a normal key's 10 is queued at 0, a low key's at -1)."""
    asked = QUEUE_DEFAULTS[default] if value is None else parse_queue_priority(value)
    return min(asked, QUEUE_CEILINGS[ceiling])
