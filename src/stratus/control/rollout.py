"""Rollout policy, pure: the weights a gradual canary steps through, and the judge that compares
the new revision's error ratio and p95 latency with the previous one over a window."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

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
class WindowStats:
    """One revision's requests over the judging window."""

    requests: int
    errors: int
    p95_ms: float | None

    @property
    def error_ratio(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class RollbackThresholds:
    """Defaults from the issue: errors 10% worse (relative) with at least ``min_errors`` of
    them; p95 50% worse. Below ``min_requests`` the window says nothing yet."""

    error_ratio_relative: float = 0.10
    min_errors: int = 5
    p95_relative: float = 0.50
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
            and candidate.p95_ms > baseline.p95_ms * (1 + limits.p95_relative):
        return Verdict("rollback", f"p95 latency {candidate.p95_ms:.1f} ms against "
                                   f"{baseline.p95_ms:.1f} ms for the previous revision")
    return Verdict("continue", f"error ratio {candidate.error_ratio:.1%} (previous "
                               f"{baseline.error_ratio:.1%}), p95 within "
                               f"{limits.p95_relative:.0%} of the previous revision's")
