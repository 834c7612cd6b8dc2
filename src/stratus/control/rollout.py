"""Rollout policy, pure: the weights a gradual canary steps through, the watch that follows
every switch to 100%, and the judge that compares the new revision's error ratio and p95
latency with the previous one's over a window."""

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


Phase = Literal["warming", "running", "watching", "succeeded", "rolled_back", "aborted"]
ACTIVE: tuple[Phase, ...] = ("warming", "running", "watching")


@dataclass
class RolloutState:
    """A rollout from ``source`` to ``target`` through the weights of ``plan``. While
    ``warming``, the target is brought to enough ready replicas for ``plan[stage]``; while
    ``running``, it holds that weight for ``interval_s`` under the judge's eye. Once it takes
    100% it is ``watching`` for ``watch_s``: the source gets no traffic then, so the target
    is judged against ``baseline``, the source's window just before the switch, while up to
    ``keep_warm`` of the source's replicas stay ready for a rollback."""

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
    watch_s: float = 0.0
    baseline: WindowStats | None = None
    keep_warm: int = 0

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE

    @property
    def weight(self) -> int:
        """The target's weight now: nothing until its first stage takes effect."""
        if self.phase == "warming":
            return self.plan[self.stage - 1] if self.stage > 0 else 0
        if self.phase in ("watching", "succeeded"):
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
                "updated_at": self.updated_at, "watch_s": self.watch_s,
                "baseline": self.baseline.__dict__ if self.baseline is not None else None,
                "keep_warm": self.keep_warm}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RolloutState:
        # Rollouts recorded before the watch existed have none of its three fields.
        baseline = data.get("baseline")
        return cls(source=data["from"], target=data["to"], plan=list(data["plan"]),
                   interval_s=data["interval_s"], window_s=data["window_s"],
                   thresholds=RollbackThresholds(**data["thresholds"]),
                   started_at=data["started_at"], stage=data["stage"], phase=data["state"],
                   reason=data["reason"], stage_started_at=data["stage_started_at"],
                   judged_since=data["judged_since"], updated_at=data["updated_at"],
                   watch_s=data.get("watch_s", 0.0),
                   baseline=WindowStats(**baseline) if baseline is not None else None,
                   keep_warm=data.get("keep_warm", 0))

    @property
    def watch_ends_at(self) -> float | None:
        """When a watch in progress passes, wall clock."""
        if self.phase != "watching" or self.stage_started_at is None:
            return None
        return self.stage_started_at + self.watch_s


@dataclass(frozen=True)
class Step:
    """What the reconciler should do next for a rollout: ``warm`` the target to ``replicas``,
    ``shift`` its weight to ``weight`` (the source has ``replicas`` ready then), ``watch``
    while keeping ``replicas`` of the source ready, ``rollback`` or ``complete``; ``hold`` is
    nothing new."""

    action: Literal["warm", "shift", "hold", "watch", "rollback", "complete"]
    weight: int = 0
    replicas: int = 0
    reason: str = ""


def warm_replicas(weight: int, baseline_ready: int, min_replicas: int) -> int:
    """Ready replicas the target needs before it takes ``weight`` percent of the traffic that
    ``baseline_ready`` replicas serve now: none when nothing is warm (it scales from zero
    like any revision)."""
    capacity = max(baseline_ready, min_replicas)
    return math.ceil(capacity * weight / 100) if capacity else 0


def kept_warm(had: int, desired: int, min_replicas: int, max_replicas: int) -> int:
    """The source's ready replicas during a watch: what it had at the switch, never more than
    the deployment wants now (a scale to zero takes it down with the target), and only in the
    room ``max_replicas`` leaves beside the serving revision. Without room it is cold, and a
    rollback starts it from zero like any revision."""
    serving = max(desired, min_replicas)
    return max(0, min(had, serving, max_replicas - serving))


def advance(state: RolloutState, now: float, *, target_ready: int, baseline_ready: int,
            min_replicas: int, max_replicas: int, desired: int, target_failure: str | None,
            candidate: WindowStats, baseline: WindowStats) -> Step:
    """The next step of an active rollout. Pure: the caller measures, this decides, and the
    caller applies the step and records it with ``apply``. ``desired`` is the replicas the
    deployment's autoscaler wants now; ``baseline`` is the source's window, which a watch
    replaces with the one it kept from before the switch."""
    if target_failure is not None:
        return Step("rollback", reason=f"revision {state.target} cannot start: {target_failure}")
    watching = state.phase == "watching"
    if watching and state.baseline is not None:
        baseline = state.baseline
    verdict = judge(candidate, baseline, state.thresholds)
    if state.judged_since is not None and verdict.action == "rollback":
        return Step("rollback", reason=verdict.reason)
    if state.phase == "warming":
        weight = state.plan[state.stage]
        needed = warm_replicas(weight, baseline_ready, min_replicas)
        if target_ready >= needed:
            return Step("shift", weight=weight, replicas=baseline_ready)
        return Step("warm", replicas=needed, weight=weight,
                    reason=f"warming revision {state.target}: {target_ready} of {needed} ready")
    started = state.stage_started_at if state.stage_started_at is not None else now
    if watching:
        if now - started >= state.watch_s:
            return Step("complete", weight=100)
        keep = kept_warm(state.keep_warm, desired, min_replicas, max_replicas)
        return Step("watch", weight=100, replicas=keep, reason=verdict.reason)
    if state.plan[state.stage] >= 100:
        return Step("complete", weight=100)
    if now - started >= state.interval_s:
        weight = state.plan[state.stage + 1]
        return Step("warm", replicas=warm_replicas(weight, baseline_ready, min_replicas),
                    weight=weight, reason=verdict.reason)
    return Step("hold", weight=state.plan[state.stage], reason=verdict.reason)


def apply(state: RolloutState, step: Step, now: float,
          baseline: WindowStats | None = None) -> bool:
    """Record ``step`` in ``state``; True when the target's weight changed. A shift to 100%
    starts the watch, which keeps ``baseline``: the source's last window before it."""
    state.updated_at = now
    if step.action == "shift":
        state.phase = "running"
        state.stage_started_at = now
        if state.judged_since is None:
            state.judged_since = now
        if step.weight >= 100 and state.watch_s > 0:
            state.phase = "watching"
            state.baseline = baseline
            state.keep_warm = step.replicas
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
