"""The router: applies traffic changes and drives rollouts step by step. It turns a unit's
routing into the dispatcher's Route, records it in the store, and logs each routing event.
What a rollout does next is decided by the pure ``rollout.advance``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from stratus.control.rollout import (
    RollbackThresholds,
    RolloutState,
    Step,
    advance,
    apply,
    canary_plan,
    judging_window,
)
from stratus.control.unit import DeploymentUnit
from stratus.control.writes import MetadataWrites
from stratus.dispatch.dispatcher import Dispatcher
from stratus.dispatch.outcomes import WindowStats
from stratus.dispatch.pool import ReplicaState
from stratus.dispatch.route import Route
from stratus.dispatch.traffic import TrafficSplit
from stratus.errors import BadRequest, Conflict
from stratus.spec import RolloutSteps, TrafficUpdate
from stratus.store.metadata import RevisionStatus

log = logging.getLogger("stratus.router")
alerts = logging.getLogger("stratus.alerts")  # where alerts go when no hook is set


class Router:
    def __init__(self, dispatcher: Dispatcher, writes: MetadataWrites) -> None:
        self.dispatcher = dispatcher
        self.writes = writes
        # (name, namespace, deployment, message): the server's alerts take rollbacks
        self.on_alert: Callable[[str, str, str, str], None] | None = None

    # -- publishing ---------------------------------------------------------------
    def publish(self, unit: DeploymentUnit, persist: bool = True) -> None:
        """Point the dispatcher at the unit's routing, and record it."""
        routing = unit.routing
        pools = {rev: unit.revisions[rev].pool for rev in routing.traffic if rev in unit.revisions}
        if not pools:
            return
        primary = unit.revisions[routing.primary()].pool
        shadow = unit.revisions.get(routing.shadow) if routing.shadow is not None else None
        sticky = routing.sticky
        self.dispatcher.set_route(Route(
            split=routing.split(), pools=pools, primary=primary,
            shadow=shadow.pool if shadow is not None else None,
            sticky_header=sticky.header if sticky is not None else None,
            sticky_field=sticky.field if sticky is not None else None,
        ))
        if persist:
            self._persist(unit)

    def _persist(self, unit: DeploymentUnit) -> None:
        self.writes.set_routing(unit.namespace, unit.name, unit.routing.to_json())

    def event(self, unit: DeploymentUnit, kind: str, message: str, alert: bool = False) -> None:
        unit.routing.event(kind, message)
        log.info("deployment %s/%s: %s", unit.namespace, unit.name, message)
        if alert and self.on_alert is not None:
            self.on_alert(f"rollout_{kind}", unit.namespace, unit.name, message)
        elif alert:
            alerts.warning("ALERT deployment %s/%s %s: %s", unit.namespace, unit.name, kind,
                           message)

    # -- operations ------------------------------------------------------------------
    def set_traffic(self, unit: DeploymentUnit, update: TrafficUpdate) -> None:
        """Apply a manual split (it ends any rollout in flight). The revisions named must be
        live already: the controller brings restored ones up first."""
        routing = unit.routing
        fields = update.model_fields_set
        if "traffic" in fields:
            if update.traffic is None:
                raise BadRequest("traffic cannot be null; name at least one revision")
            TrafficSplit.of(update.traffic)  # validates weights and their sum
            self._check_live(unit, update.traffic)
        if "shadow" in fields and update.shadow is not None:
            self._check_live(unit, {update.shadow: 0})
        rollout = routing.rollout
        if "traffic" in fields and rollout is not None and rollout.active:
            self._abort(unit, rollout, "traffic was set by hand")
        if "traffic" in fields and update.traffic is not None:
            routing.traffic = dict(update.traffic)
            # The heaviest revision is the stable one; a tie keeps the current stable.
            stable = max(routing.traffic, key=lambda rev: (routing.traffic[rev],
                                                           rev == routing.stable, rev))
            if stable != routing.stable:
                routing.previous, routing.stable = routing.stable, stable
        if "shadow" in fields:
            routing.shadow = update.shadow
        if "sticky" in fields:
            routing.sticky = update.sticky
        self.event(unit, "traffic", f"traffic set to {self._describe(unit)}")
        self.publish(unit)

    def declare(self, unit: DeploymentUnit, steps: RolloutSteps) -> None:
        """Keep ``steps`` as how the deployment's rollouts go unless told otherwise."""
        steps = RolloutSteps().over(steps)  # without a RolloutStrategy's promote
        if steps != unit.routing.strategy:
            unit.routing.strategy = steps
            self._persist(unit)

    def start_rollout(self, unit: DeploymentUnit, to: int, given: RolloutSteps,
                      kind: str = "rollout") -> RolloutState:
        """Roll out revision ``to`` with the fields ``given`` sets, the deployment's own for
        the rest."""
        routing = unit.routing
        source = routing.stable
        if source is None:
            raise Conflict(f"deployment {unit.name!r} has no stable revision to roll out from")
        self._check_live(unit, {to: 0})
        request = given.over(routing.strategy)
        plan = canary_plan(request.canary, request.step) if request.canary is not None else [100]
        rollout = routing.rollout
        if rollout is not None and rollout.active:
            if rollout.phase == "watching" and to == rollout.target:
                raise Conflict(f"revision {to} already takes all of {unit.name!r}'s traffic")
            if rollout.phase != "watching":  # a watched target is stable and serves it all
                routing.traffic.pop(rollout.target, None)
                routing.traffic[source] = 100 - sum(
                    w for r, w in routing.traffic.items() if r != source)
            self._abort(unit, rollout, f"superseded by a rollout to {to}")
        if to == source:
            # The stable revision shares the split: rolling out to it means taking the rest,
            # from the heaviest other revision, in one switch.
            others = [rev for rev, weight in routing.traffic.items() if rev != source and weight]
            if not others:
                raise Conflict(f"revision {source} already takes all of {unit.name!r}'s traffic")
            source = max(others, key=lambda rev: (routing.traffic[rev], rev))
            plan = [100]
        # A rollout moves traffic between two revisions: any third one hands its share to the
        # source now, and drains.
        current = routing.traffic.get(to, 0)
        routing.traffic = {source: 100 - current, to: current}
        thresholds = RollbackThresholds(**request.thresholds.model_dump())
        now = time.time()
        state = RolloutState(source=source, target=to, plan=plan,
                             interval_s=request.interval_s,
                             window_s=request.window_s or request.interval_s,
                             thresholds=thresholds, started_at=now, updated_at=now,
                             watch_s=request.watch_s)
        routing.rollout = state
        how = f"canary {plan}" if len(plan) > 1 else "blue-green"
        if state.watch_s:
            how += f", watched {state.watch_s:g}s"
        self.event(unit, f"{kind}_started", f"{kind} from revision {source} to {to} ({how})")
        self._persist(unit)
        self.advance(unit, now)
        return state

    def rollback(self, unit: DeploymentUnit) -> str:
        """Stop a rollout in flight, or go back to the previous stable revision."""
        rollout = unit.routing.rollout
        if rollout is not None and rollout.active:
            self._roll_back(unit, rollout, "rolled back by request", time.time(), alert=False)
            return f"rollout to revision {rollout.target} stopped; revision {rollout.source} serves"
        previous = unit.routing.previous
        if previous is None or previous == unit.stable:
            raise Conflict(f"deployment {unit.name!r} has no previous revision to roll back to")
        self._check_live(unit, {previous: 0})
        # A switch straight back, not watched: rolling back a rollback would return traffic
        # to the revision a person just fled.
        self.start_rollout(unit, previous, RolloutSteps(canary=None, watch_s=0), kind="rollback")
        return f"rolling back to revision {previous}"

    # -- the rollout loop (from the reconciler) -----------------------------------------
    def advance(self, unit: DeploymentUnit, wall: float) -> dict[int, int]:
        """Move the unit's rollout on; returns replicas to keep warm, by revision."""
        rollout = unit.routing.rollout
        if rollout is None or not rollout.active:
            return {}
        for _ in range(4):  # a step may unlock the next at once (warm -> shift -> complete)
            step = self._next_step(unit, rollout, wall)
            if step.action == "hold":
                return {}
            if step.action == "watch":
                return {rollout.source: step.replicas}
            if step.action == "rollback":
                self._roll_back(unit, rollout, step.reason, wall, alert=True)
                return {}
            if step.action == "warm":
                if rollout.phase == "running":  # the stage is over: warm up for the next
                    apply(rollout, step, wall)
                    self._persist(unit)
                    continue
                if rollout.reason != step.reason:
                    rollout.reason = step.reason
                    self._persist(unit)
                return {rollout.target: step.replicas}
            apply(rollout, step, wall, self._last_window(unit, rollout, step))
            self._take(unit, rollout, step)
            if not rollout.active:
                return {}
        return {}

    @staticmethod
    def _last_window(unit: DeploymentUnit, rollout: RolloutState, step: Step) -> WindowStats | None:
        """At the switch to 100%: the source's last ``window_s``, the watch's baseline."""
        source = unit.revisions.get(rollout.source)
        if step.action != "shift" or step.weight < 100 or source is None:
            return None
        return source.pool.outcomes.window(time.monotonic() - rollout.window_s)

    def _next_step(self, unit: DeploymentUnit, rollout: RolloutState, wall: float) -> Step:
        target = unit.revisions.get(rollout.target)
        source = unit.revisions.get(rollout.source)
        if target is None or source is None:
            missing = rollout.target if target is None else rollout.source
            return Step("rollback", reason=f"revision {missing} is no longer live")
        failure = target.pool.failure
        # A start-up failure is judged only once the target had its chances (the backoff
        # sends it on to the next attempt otherwise).
        failed = failure.reason if failure is not None and failure.count >= 2 else None
        since = time.monotonic() - (wall - judging_window(rollout, wall))
        return advance(
            rollout, wall,
            target_ready=target.pool.count(ReplicaState.READY),
            baseline_ready=source.pool.count(ReplicaState.READY),
            min_replicas=unit.scaling.min_replicas,
            max_replicas=unit.scaling.max_replicas,
            desired=unit.decision.desired,
            target_failure=failed,
            candidate=target.pool.outcomes.window(since),
            baseline=source.pool.outcomes.window(since),
        )

    def _take(self, unit: DeploymentUnit, rollout: RolloutState, step: Step) -> None:
        routing = unit.routing
        if step.action == "complete":
            routing.traffic = {rollout.target: 100}
            routing.previous, routing.stable = rollout.source, rollout.target
            rollout.reason = None
            watched = f" after {rollout.watch_s:g}s watched" if rollout.watch_s else ""
            self.event(unit, "succeeded",
                       f"revision {rollout.target} takes all traffic{watched}; revision "
                       f"{rollout.source} drains")
        elif rollout.phase == "watching":
            # Serving everything, the target is the stable revision; a rollback still returns
            # to the source, kept warm until the watch ends.
            routing.traffic, routing.stable = {rollout.target: 100}, rollout.target
            until = _iso(rollout.watch_ends_at or time.time(), "seconds")
            rollout.reason = (f"watched until {until}; rolls back to "
                              f"revision {rollout.source} if it does worse")
            self.event(unit, "watching", f"revision {rollout.target} takes all traffic, "
                                         f"{rollout.reason}")
        elif step.action == "shift":
            routing.traffic = {rollout.source: 100 - step.weight, rollout.target: step.weight}
            rollout.reason = None
            self.event(unit, "stage", f"revision {rollout.target} at {step.weight}% of traffic")
        self.publish(unit)

    def _roll_back(self, unit: DeploymentUnit, rollout: RolloutState, reason: str, wall: float,
                   alert: bool) -> None:
        """``alert``: the revision failed (it is marked so); otherwise a person stopped it."""
        routing = unit.routing
        rollout.phase = "rolled_back" if alert else "aborted"
        rollout.reason, rollout.updated_at = reason, wall
        routing.traffic.pop(rollout.target, None)
        routing.traffic[rollout.source] = 100 - sum(
            weight for rev, weight in routing.traffic.items() if rev != rollout.source)
        routing.stable = rollout.source
        if routing.shadow == rollout.target:
            routing.shadow = None
        self.event(unit, "rolled_back",
                   f"revision {rollout.target} rolled back to {rollout.source}: {reason}",
                   alert=alert)
        if alert:
            self.writes.set_revision_status(unit.namespace, unit.name, rollout.target,
                                            RevisionStatus.FAILED, reason)
        self.publish(unit)

    def _abort(self, unit: DeploymentUnit, rollout: RolloutState, why: str) -> None:
        """End a rollout a person overrode. One that was watching had taken all traffic and
        stays stable: its source becomes the previous revision, as if it had passed."""
        if rollout.phase == "watching":
            unit.routing.previous = rollout.source
        rollout.phase, rollout.reason = "aborted", why
        self.event(unit, "rollout_aborted",
                   f"rollout to revision {rollout.target} aborted: {why}")

    # -- helpers ------------------------------------------------------------------------
    @staticmethod
    def _check_live(unit: DeploymentUnit, revisions: dict[int, int]) -> None:
        for revision in revisions:
            if revision not in unit.revisions:
                raise BadRequest(f"deployment {unit.name!r} has no revision {revision}")

    @staticmethod
    def _describe(unit: DeploymentUnit) -> str:
        routing = unit.routing
        parts = [f"{rev}={weight}%" for rev, weight in sorted(routing.traffic.items())]
        if routing.shadow is not None:
            parts.append(f"shadow {routing.shadow}")
        return ", ".join(parts)


def traffic_view(unit: DeploymentUnit) -> dict[str, Any]:
    """The JSON of ``GET /api/deployments/{name}/traffic``."""
    routing = unit.routing
    now = time.monotonic()
    stats = {}
    for number, live in sorted(unit.revisions.items()):
        if number in routing.needed():
            stats[str(number)] = {**live.pool.outcomes.summary(now - 300.0),
                                  "shadow": number == routing.shadow,
                                  "copies_dropped": live.pool.copies_dropped}
    data = routing.to_json()
    rollout = data.get("rollout")
    if rollout is not None:
        ends = unit.routing.rollout.watch_ends_at if unit.routing.rollout is not None else None
        rollout["watch_ends_at"] = ends
        for key in ("started_at", "updated_at", "stage_started_at", "judged_since",
                    "watch_ends_at"):
            if rollout[key] is not None:
                rollout[key] = _iso(rollout[key])
    return {"deployment": unit.name, "latest": unit.latest, **data, "revisions": stats,
            "stats_window_s": 300.0}


def _iso(wall: float, timespec: str = "auto") -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec=timespec)
