"""Outlier ejection: which replicas of a revision the picker skips after consecutive failures,
or an error ratio that stands out from their siblings', for a back-off that doubles, then
probes with one request (pure, with injected time)."""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass

from stratus.resilience.circuit import CircuitState


@dataclass(frozen=True)
class OutlierSettings:
    consecutive_failures: int = 5  # server-side failures in a row (5xx: crash, timeout, loss)
    interval_s: float = 10.0  # the window whose error ratios are compared
    min_requests: int = 20  # in the window, for a replica's ratio to count
    ratio_margin: float = 0.3  # eject at an error ratio this far above its siblings'
    base_ejection_s: float = 30.0  # doubled at each ejection in a row
    max_ejection_s: float = 300.0
    max_ejected_share: float = 0.5  # of the revision's ready replicas, rounded down

    def __post_init__(self) -> None:
        if self.consecutive_failures < 1 or self.min_requests < 1:
            raise ValueError("consecutive_failures and min_requests must be >= 1")
        if not (self.interval_s > 0 and 0 < self.base_ejection_s <= self.max_ejection_s):
            raise ValueError("interval_s must be > 0 and 0 < base_ejection_s <= max_ejection_s")
        if not (0 <= self.max_ejected_share <= 1 and 0 < self.ratio_margin <= 1):
            raise ValueError("max_ejected_share must be in [0, 1], ratio_margin in (0, 1]")


@dataclass
class ReplicaHealth:
    state: CircuitState = CircuitState.CLOSED
    consecutive: int = 0  # failures in a row
    requests: int = 0  # in the current interval
    errors: int = 0
    ejections: int = 0  # in a row: the back-off doubles with each
    until: float = 0.0  # ejected until (monotonic)
    probe: Hashable | None = None  # the request that is the half-open probe, while it is out
    reason: str = ""  # why it was last ejected
    readmitted_at: float = -math.inf


@dataclass(frozen=True)
class Change:
    key: Hashable
    ejected: bool  # False: readmitted
    reason: str


class OutlierDetector:
    """One revision's replicas, keyed by the caller's ids. ``available`` says whether the
    picker may use one; ``dispatched`` and ``record`` follow each request it sends there,
    named by a token of the caller's (unique among the requests out on one replica), so that
    only the probe's own answer decides a half-open replica."""

    def __init__(self, settings: OutlierSettings, now: float) -> None:
        self.settings = settings
        self.replicas: dict[Hashable, ReplicaHealth] = {}
        self.ejected = 0  # replicas open or half-open
        self.ejections_total = 0
        self._interval_end = now + settings.interval_s

    def add(self, key: Hashable) -> None:
        self.replicas.setdefault(key, ReplicaHealth())

    def forget(self, key: Hashable) -> None:
        health = self.replicas.pop(key, None)
        if health is not None and health.state is not CircuitState.CLOSED:
            self.ejected -= 1

    def available(self, key: Hashable, now: float) -> bool:
        health = self.replicas.get(key)
        if health is None or health.state is CircuitState.CLOSED:
            return True
        if health.state is CircuitState.OPEN:
            if now < health.until:
                return False
            health.state = CircuitState.HALF_OPEN
        return health.probe is None

    def dispatched(self, key: Hashable, token: Hashable) -> None:
        """Request ``token`` went to ``key``: if that is half-open with no probe out, this
        request is its probe."""
        health = self.replicas.get(key)
        if health is not None and health.state is CircuitState.HALF_OPEN and health.probe is None:
            health.probe = token

    def abandoned(self, key: Hashable, token: Hashable | None = None) -> None:
        """Request ``token`` to ``key`` ended unjudged (its caller left): if it was the
        probe, another request may probe."""
        health = self.replicas.get(key)
        if health is not None and health.probe is not None and health.probe == token:
            health.probe = None

    def record(self, key: Hashable, ok: bool, now: float,
               token: Hashable | None = None) -> list[Change]:
        """Request ``token`` to ``key`` ended, ``ok`` unless with a server-side failure. Of
        the requests that end while ``key`` is half-open, only its probe decides: the others
        were sent before the ejection (or beside the probe, when every replica is ejected)."""
        changes: list[Change] = []
        health = self.replicas.get(key)
        if health is not None:
            if health.state is CircuitState.HALF_OPEN and health.probe is not None \
                    and health.probe == token:
                health.probe = None
                if ok:
                    health.state, health.consecutive = CircuitState.CLOSED, 0
                    health.readmitted_at = now
                    self.ejected -= 1
                    changes.append(Change(key, False, "the probe request succeeded"))
                else:
                    self._open(health, now, "the probe request failed")
                    changes.append(Change(key, True, health.reason))
            elif health.state is CircuitState.CLOSED:
                health.requests += 1
                health.consecutive = 0 if ok else health.consecutive + 1
                health.errors += not ok
                limit = self.settings.consecutive_failures
                if health.consecutive >= limit and self._room():
                    self._eject(health, now, f"{health.consecutive} failures in a row")
                    changes.append(Change(key, True, health.reason))
            # An answer to a request sent before the ejection (or beside the probe) says
            # nothing new: ignored.
        if now >= self._interval_end:
            changes.extend(self._compare(now))
        return changes

    def _compare(self, now: float) -> list[Change]:
        """Eject replicas whose error ratio over the interval stands out from their siblings'."""
        settings = self.settings
        changes: list[Change] = []
        counted = {key: h for key, h in self.replicas.items() if h.state is CircuitState.CLOSED}
        total_requests = sum(h.requests for h in counted.values())
        total_errors = sum(h.errors for h in counted.values())
        for key, health in sorted(counted.items(), key=lambda item: -item[1].errors):
            others = total_requests - health.requests
            if health.requests < settings.min_requests or others < settings.min_requests:
                continue
            ratio = health.errors / health.requests
            siblings = (total_errors - health.errors) / others
            if ratio - siblings >= settings.ratio_margin and self._room():
                self._eject(health, now, f"error ratio {ratio:.0%} over {settings.interval_s:g}s "
                                         f"against {siblings:.0%} for its siblings")
                changes.append(Change(key, True, health.reason))
        for health in self.replicas.values():
            health.requests = health.errors = 0
        self._interval_end = now + settings.interval_s
        return changes

    def _room(self) -> bool:
        """At most ``max_ejected_share`` of the replicas out at once (a lone one never is)."""
        return self.ejected + 1 <= math.floor(self.settings.max_ejected_share * len(self.replicas))

    def _eject(self, health: ReplicaHealth, now: float, reason: str) -> None:
        if now - health.readmitted_at >= self.settings.max_ejection_s:
            health.ejections = 0  # healthy long enough: its next back-off starts from the base
        self.ejected += 1
        self._open(health, now, reason)

    def _open(self, health: ReplicaHealth, now: float, reason: str) -> None:
        settings = self.settings
        health.ejections += 1
        backoff = min(settings.base_ejection_s * 2.0 ** (health.ejections - 1),
                      settings.max_ejection_s)
        health.state, health.until, health.reason = CircuitState.OPEN, now + backoff, reason
        health.consecutive = health.requests = health.errors = 0
        self.ejections_total += 1

