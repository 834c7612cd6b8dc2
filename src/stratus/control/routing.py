"""A deployment's routing state: its traffic split, stable and previous revisions, shadow,
sticky key, how its rollouts go, the rollout in flight and recent routing events, as kept in
memory and in the store."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from stratus.control.rollout import RolloutState
from stratus.dispatch.traffic import TrafficSplit
from stratus.spec import RolloutSteps, StickySpec

EVENTS_KEPT = 50


@dataclass
class Routing:
    traffic: dict[int, int] = field(default_factory=dict)  # revision -> percent; zeros kept
    stable: int | None = None  # what the split falls back to and a rollback returns to
    previous: int | None = None  # the stable revision before the last completed switch
    shadow: int | None = None
    sticky: StickySpec | None = None
    rollout: RolloutState | None = None
    strategy: RolloutSteps = field(default_factory=RolloutSteps)  # the deployment's declared
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=EVENTS_KEPT))

    def split(self) -> TrafficSplit:
        return TrafficSplit.of(self.traffic)

    def members(self) -> set[int]:
        """Revisions that serve client traffic: by weight, or by pin at weight 0. A shadow at
        weight 0 is not one: its load is copies, which must not scale the deployment."""
        return {rev for rev, weight in self.traffic.items() if weight or rev != self.shadow}

    def needed(self) -> set[int]:
        """Revisions that must stay live: members, the shadow and a rollout's target."""
        needed = self.members()
        if self.shadow is not None:
            needed.add(self.shadow)
        if self.rollout is not None and self.rollout.active:
            needed.update((self.rollout.source, self.rollout.target))
        if self.stable is not None:
            needed.add(self.stable)
        return needed

    def primary(self) -> int:
        """The revision whose pool takes requests stranded elsewhere: the stable one while
        it has traffic, else the heaviest."""
        if self.stable in self.traffic and self.traffic[self.stable] > 0:
            return self.stable
        return max(self.traffic, key=lambda rev: (self.traffic[rev], rev))

    def event(self, kind: str, message: str) -> dict[str, Any]:
        entry = {"at": datetime.now(UTC).isoformat(), "kind": kind, "message": message}
        self.events.append(entry)
        return entry

    def to_json(self) -> dict[str, Any]:
        return {
            "traffic": {str(rev): weight for rev, weight in sorted(self.traffic.items())},
            "stable": self.stable,
            "previous": self.previous,
            "shadow": self.shadow,
            "sticky": self.sticky.model_dump() if self.sticky is not None else None,
            "rollout": self.rollout.to_json() if self.rollout is not None else None,
            "strategy": self.strategy.model_dump(),
            "events": list(self.events),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Routing:
        routing = cls(
            traffic={int(rev): int(weight) for rev, weight in (data.get("traffic") or {}).items()},
            stable=data.get("stable"),
            previous=data.get("previous"),
            shadow=data.get("shadow"),
            sticky=StickySpec.model_validate(data["sticky"]) if data.get("sticky") else None,
            rollout=RolloutState.from_json(data["rollout"]) if data.get("rollout") else None,
            strategy=RolloutSteps.model_validate(data.get("strategy") or {}),
        )
        routing.events.extend(data.get("events") or [])
        return routing
