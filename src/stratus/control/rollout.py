"""Rollout policy, pure: the weights a gradual canary steps through, and the judge that compares
the new revision's error ratio and p95 latency with the previous one over a window."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from stratus.dispatch.outcomes import WindowStats
from stratus.errors import BadRequest


def canary_plan(canary: int, step: int) -> list[int]:
    """The new revision's weight at each stage: ``canary`` first, then every multiple of
    ``step`` above it, then 100. ``canary_plan(10, 25)`` is [10, 25, 50, 75, 100]."""
    if not 1 <= canary <= 100:
        raise BadRequest(f"the canary weight must be in 1..100, not {canary}")
    if not 1 <= step <= 100:
        raise BadRequest(f"the canary step must be in 1..100, not {step}")
    plan = [canary]
    weight = (canary // step + 1) * step
    while weight < 100:
        plan.append(weight)
        weight += step
    if plan[-1] != 100:
        plan.append(100)
    return plan


@dataclass(frozen=True)
class RollbackThresholds:
    """Defaults from the issue: errors 10% worse (relative) with at least ``min_errors`` of
    them; p95 50% worse. Below ``min_requests`` the window says nothing yet, and a p95 gap
    under ``p95_min_delta_ms`` is noise (a replica's first requests of a sub-millisecond
    handler can double its p95), so it never triggers a rollback on its own."""

    error_ratio_relative: float = 0.10
    min_errors: int = 5
    p95_relative: float = 0.50
    p95_min_delta_ms: float = 20.0
    min_requests: int = 20


@dataclass(frozen=True)
class Verdict:
    action: Literal["rollback", "continue", "wait"]
    reason: str


def judge(candidate: WindowStats, baseline: WindowStats,
          limits: RollbackThresholds = RollbackThresholds()) -> Verdict:
    """Roll back when the candidate is worse than the baseline by a threshold; wait while the
    window holds too few requests to tell."""
    if candidate.errors >= limits.min_errors:
        allowed = baseline.error_ratio * (1 + limits.error_ratio_relative)
        if candidate.error_ratio > allowed:
            return Verdict("rollback", f"error ratio {candidate.error_ratio:.1%} against "
                                       f"{baseline.error_ratio:.1%} for the previous revision "
                                       f"({candidate.errors} errors in {candidate.requests})")
    if candidate.requests < limits.min_requests or baseline.requests < limits.min_requests:
        return Verdict("wait", f"{candidate.requests} requests to the new revision and "
                               f"{baseline.requests} to the previous one; "
                               f"{limits.min_requests} each are needed")
    if candidate.p95_ms is not None and baseline.p95_ms is not None \
            and math.isfinite(candidate.p95_ms) \
            and candidate.p95_ms > baseline.p95_ms * (1 + limits.p95_relative) \
            and candidate.p95_ms - baseline.p95_ms >= limits.p95_min_delta_ms:
        return Verdict("rollback", f"p95 latency {candidate.p95_ms:.1f} ms against "
                                   f"{baseline.p95_ms:.1f} ms for the previous revision")
    return Verdict("continue", f"error ratio {candidate.error_ratio:.1%} (previous "
                               f"{baseline.error_ratio:.1%}), p95 within "
                               f"{limits.p95_relative:.0%} of the previous revision's")


Phase = Literal["warming", "running", "succeeded", "rolled_back", "aborted"]
ACTIVE: tuple[Phase, ...] = ("warming", "running")


@dataclass
class RolloutState:
    """A rollout from ``source`` to ``target`` through the weights of ``plan``. While
    ``warming``, the target is brought to enough ready replicas for ``plan[stage]``; while
    ``running``, it holds that weight for ``interval_s`` under the judge's eye."""

    source: int
    target: int
    plan: list[int]
    interval_s: float
    window_s: float
    thresholds: RollbackThresholds
    started_at: float  # wall clock, as every time here
    stage: int = 0
    phase: Phase = "warming"
    reason: str | None = None
    stage_started_at: float | None = None  # when plan[stage] took effect
    judged_since: float | None = None  # when the target first got traffic
    updated_at: float = 0.0

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE

    @property
    def weight(self) -> int:
        """The target's weight now: nothing until its first stage takes effect."""
        if self.phase == "warming":
            return self.plan[self.stage - 1] if self.stage > 0 else 0
        if self.phase == "succeeded":
            return 100
        if self.phase in ("rolled_back", "aborted"):
            return 0
        return self.plan[self.stage]

    def to_json(self) -> dict[str, object]:
        return {"from": self.source, "to": self.target, "plan": self.plan, "stage": self.stage,
                "weight": self.weight, "state": self.phase, "reason": self.reason,
                "interval_s": self.interval_s, "window_s": self.window_s,
                "thresholds": self.thresholds.__dict__, "started_at": self.started_at,
                "stage_started_at": self.stage_started_at, "judged_since": self.judged_since,
                "updated_at": self.updated_at}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RolloutState:
        return cls(source=data["from"], target=data["to"], plan=list(data["plan"]),
                   interval_s=data["interval_s"], window_s=data["window_s"],
                   thresholds=RollbackThresholds(**data["thresholds"]),
                   started_at=data["started_at"], stage=data["stage"], phase=data["state"],
                   reason=data["reason"], stage_started_at=data["stage_started_at"],
                   judged_since=data["judged_since"], updated_at=data["updated_at"])


@dataclass(frozen=True)
class Step:
    """What the reconciler should do next for a rollout: ``warm`` the target to ``replicas``,
    ``shift`` its weight to ``weight``, ``rollback`` or ``complete``; ``hold`` is nothing new."""

    action: Literal["warm", "shift", "hold", "rollback", "complete"]
    weight: int = 0
    replicas: int = 0
    reason: str = ""


def warm_replicas(weight: int, baseline_ready: int, min_replicas: int) -> int:
    """Ready replicas the target needs before it takes ``weight`` percent of the traffic that
    ``baseline_ready`` replicas serve now: none when nothing is warm (it scales from zero
    like any revision)."""
    capacity = max(baseline_ready, min_replicas)
    return math.ceil(capacity * weight / 100) if capacity else 0


def advance(state: RolloutState, now: float, *, target_ready: int, baseline_ready: int,
            min_replicas: int, target_failure: str | None, candidate: WindowStats,
            baseline: WindowStats) -> Step:
    """The next step of an active rollout. Pure: the caller measures, this decides, and the
    caller applies the step and records it with ``apply``."""
    if target_failure is not None:
        return Step("rollback", reason=f"revision {state.target} cannot start: {target_failure}")
    verdict = judge(candidate, baseline, state.thresholds)
    if state.judged_since is not None and verdict.action == "rollback":
        return Step("rollback", reason=verdict.reason)
    if state.phase == "warming":
        weight = state.plan[state.stage]
        needed = warm_replicas(weight, baseline_ready, min_replicas)
        if target_ready >= needed:
            return Step("shift", weight=weight)
        return Step("warm", replicas=needed, weight=weight,
                    reason=f"warming revision {state.target}: {target_ready} of {needed} ready")
    if state.plan[state.stage] >= 100:
        return Step("complete", weight=100)
    started = state.stage_started_at if state.stage_started_at is not None else now
    if now - started >= state.interval_s:
        weight = state.plan[state.stage + 1]
        return Step("warm", replicas=warm_replicas(weight, baseline_ready, min_replicas),
                    weight=weight, reason=verdict.reason)
    return Step("hold", weight=state.plan[state.stage], reason=verdict.reason)


def apply(state: RolloutState, step: Step, now: float) -> bool:
    """Record ``step`` in ``state``; True when the target's weight changed."""
    state.updated_at = now
    if step.action == "shift":
        state.phase = "running"
        state.stage_started_at = now
        if state.judged_since is None:
            state.judged_since = now
        return True
    if step.action == "warm" and state.phase == "running":
        state.stage += 1
        state.phase = "warming"
        return False
    if step.action == "complete":
        state.phase = "succeeded"
        return True
    if step.action == "rollback":
        state.phase = "rolled_back"
        state.reason = step.reason
        return True
    return False


def judging_window(state: RolloutState, now: float) -> float:
    """Where the judge's window starts: the last ``window_s``, never before the target's
    first traffic."""
    since = state.judged_since if state.judged_since is not None else now
    return max(since, now - state.window_s)
