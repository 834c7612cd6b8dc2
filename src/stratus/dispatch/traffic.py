"""Traffic policy between a deployment's revisions, pure: weights summing to 100, a pinned
revision that skips them, and sticky A/B assignment by a stable hash of a key (md5, never
``hash()``, so an assignment survives restarts and agrees across gateway processes)."""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from itertools import accumulate

from stratus.errors import BadRequest

TOTAL = 100
BUCKETS = 10_000  # sticky keys hash into this many buckets: weights resolve to 0.01%


@dataclass(frozen=True)
class TrafficSplit:
    """Revisions with a share of traffic each; shares are whole percents summing to 100."""

    revisions: tuple[int, ...]
    weights: tuple[int, ...]

    @classmethod
    def of(cls, shares: Mapping[int, int]) -> TrafficSplit:
        items = sorted((int(rev), int(weight)) for rev, weight in shares.items())
        if not items:
            raise BadRequest("a traffic split needs at least one revision")
        for revision, weight in items:
            if revision < 1:
                raise BadRequest(f"revision numbers start at 1, not {revision}")
            if not 0 <= weight <= TOTAL:
                raise BadRequest(f"weight {weight} of revision {revision} is not in 0..{TOTAL}")
        if sum(weight for _, weight in items) != TOTAL:
            raise BadRequest(f"traffic weights must sum to {TOTAL}, not "
                             f"{sum(weight for _, weight in items)}")
        kept = [(rev, weight) for rev, weight in items if weight > 0]
        return cls(tuple(rev for rev, _ in kept), tuple(weight for _, weight in kept))

    @classmethod
    def single(cls, revision: int) -> TrafficSplit:
        """Blue-green's state: everything to one revision."""
        return cls((revision,), (TOTAL,))

    def shares(self) -> dict[int, int]:
        return dict(zip(self.revisions, self.weights, strict=True))

    def pick(self, draw: float) -> int:
        """The revision for a uniform ``draw`` in [0, 1)."""
        return self._at(draw * TOTAL)

    def pick_sticky(self, key: str) -> int:
        """The same key always lands on the same revision while the split is unchanged; when a
        weight moves, only the keys in the moved range change revision."""
        digest = hashlib.md5(key.encode(), usedforsecurity=False).digest()
        bucket = int.from_bytes(digest[:8], "big") % BUCKETS
        return self._at(bucket * TOTAL / BUCKETS)

    @cached_property
    def _cumulative(self) -> list[int]:
        return list(accumulate(self.weights))

    def _at(self, point: float) -> int:
        index = bisect_right(self._cumulative, point)
        return self.revisions[min(index, len(self.revisions) - 1)]


def choose(split: TrafficSplit, pinned: int | None, sticky_key: str | None, draw: float) -> int:
    """Where one request goes: a pin wins, then a sticky key, then the weighted draw."""
    if pinned is not None:
        return pinned
    if sticky_key:
        return split.pick_sticky(sticky_key)
    return split.pick(draw)
