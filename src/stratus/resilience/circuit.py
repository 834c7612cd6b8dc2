"""Circuit states and the start-up back-off: a revision whose replicas fail to start is open
(no start until the back-off ends), then half-open (one probe replica), closed again once one
is ready (pure)."""

from __future__ import annotations

import enum


class CircuitState(enum.StrEnum):
    CLOSED = "closed"  # serving as usual
    OPEN = "open"  # refused until the back-off ends
    HALF_OPEN = "half_open"  # one probe decides: closed again, or open for twice as long


def init_backoff(failures: int, max_s: float) -> float:
    """Seconds before the next start after ``failures`` consecutive ones: 1, 2, 4 ... max."""
    return float(min(2.0 ** (failures - 1), max_s))


def init_circuit(failures: int, retry_at: float, now: float) -> CircuitState:
    """A revision's start-up circuit: open while its back-off runs, then half-open until a
    replica of it is ready (which clears the failures)."""
    if failures <= 0:
        return CircuitState.CLOSED
    return CircuitState.OPEN if now < retry_at else CircuitState.HALF_OPEN
