"""Offline autoscaling simulator: replays an invocation trace through the live policy objects on a
simulated clock, mirroring the reconciler's tick, the activator and the pool's queue (pure)."""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import pairwise
from typing import NamedTuple

from stratus.autoscale.build import build_policy
from stratus.autoscale.policy import ReplicaCounts, ScalingPolicy
from stratus.cost import DEFAULT_PRICES, Prices
from stratus.dispatch.load import LoadRecorder, MetricSample
from stratus.resilience.concurrency_limit import ConcurrencyLimit, LimitSettings
from stratus.sim.report import DecisionRecord, DeploymentRun, SimReport
from stratus.spec import RuntimeSpec, ScalingSpec, target_concurrency

PolicyFactory = Callable[[], ScalingPolicy]

_STARTING, _READY, _DRAINING = 0, 1, 2


class Invocation(NamedTuple):
    timestamp_s: float
    deployment: str
    duration_ms: float


@dataclass(frozen=True)
class SimSettings:
    tick_s: float = 1.0
    cold_start_ms: float = 500.0
    max_concurrency: int = 1  # slots per replica; 1 is FaaS-like
    max_queued: int = 1000  # as ScalingSpec: beyond this many waiting, requests are shed
    queue_timeout_s: float = 60.0  # as ScalingSpec: a waiting request gives up after this
    prices: Prices = DEFAULT_PRICES
    memory_gb: float | None = None  # per replica; None: cost.DEFAULT_MEMORY_GB
    start_s: float | None = None  # default: the first arrival, floored to the tick
    end_s: float | None = None  # default: the last arrival; unfinished requests still complete
    record_decisions: bool = False  # one record per tick and deployment: 86,400 a day each
    # Adaptive shedding: the live pool's admission, in front of the queue (None: off).
    concurrency_limit: LimitSettings | None = None

    def __post_init__(self) -> None:
        if not self.tick_s > 0:
            raise ValueError("tick_s must be > 0")
        if not self.cold_start_ms >= 0:
            raise ValueError("cold_start_ms must be >= 0")
        if self.max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if self.max_queued < 0 or not self.queue_timeout_s > 0:
            raise ValueError("max_queued must be >= 0 and queue_timeout_s > 0")


def spec_policy_factory(scaling: ScalingSpec, max_concurrency: int) -> PolicyFactory:
    """Policies built exactly as the live controller builds them (``DeploymentUnit``)."""
    runtime = RuntimeSpec(bundle="", entrypoint="", max_concurrency=max_concurrency)
    target = target_concurrency(scaling, runtime)
    build_policy(scaling, target)  # fail now, not on the first deployment
    return lambda: build_policy(scaling, target)


class _Replica:
    __slots__ = ("inflight", "key", "ready_at", "state")

    def __init__(self, key: int) -> None:
        self.key = key
        self.state = _STARTING
        self.inflight = 0
        self.ready_at = math.inf


def _inflight(replica: _Replica) -> int:
    return replica.inflight


class _DeploymentSim:
    """One deployment: its pool (replicas, queue, LoadRecorder) and its policy.

    Events at the same instant run in this order: completions, replicas becoming ready,
    queue timeouts, arrivals (then one activator pass for all of them), the tick.
    """

    def __init__(self, name: str, policy: ScalingPolicy, settings: SimSettings, start: float) -> None:
        self.policy = policy
        self.settings = settings
        self.cap = settings.max_concurrency
        self.cold_s = settings.cold_start_ms / 1000.0
        self.record = settings.record_decisions
        self.run = DeploymentRun(name)
        self.recorder = LoadRecorder(start)
        self.replicas: dict[int, _Replica] = {}  # creation order, as the live pool's dict
        self.ready: list[_Replica] = []
        self.free: list[_Replica] = []  # idle ready replicas, kept only when cap == 1
        self.waiters: deque[tuple[float, float]] = deque()  # (arrived, duration_s)
        self.starting: deque[tuple[float, _Replica]] = deque()  # (ready at, replica): FIFO
        # A heap of (done at, seq, replica, arrived, duration): the last two for the limit.
        self.running: list[tuple[float, int, _Replica, float, float]] = []
        limit = settings.concurrency_limit
        self.limit = ConcurrencyLimit(limit, start) if limit is not None else None
        self.seq = 0
        self.n_ready = self.n_starting = self.n_up = self.n_busy = 0
        self.desired = 0
        self.counts = ReplicaCounts(0, 0)
        self.clock = start  # replica-seconds are integrated up to here

    def simulate(self, arrivals: list[float], durations: list[float], start: float,
                 end: float) -> DeploymentRun:
        tick_s, inf = self.settings.tick_s, math.inf
        timeout = self.settings.queue_timeout_s
        running, starting, waiters, run = self.running, self.starting, self.waiters, self.run
        count, index, k = len(arrivals), 0, 1
        tick = start + tick_s
        while True:
            t_done = running[0][0] if running else inf
            t_ready = starting[0][0] if starting else inf
            t_timeout = waiters[0][0] + timeout if waiters else inf
            t_arrive = arrivals[index] if index < count else inf
            if tick > end and index >= count and not running and not waiters:
                break
            now = min(t_done, t_ready, t_timeout, t_arrive, tick)
            if now > self.clock:  # O(1) accounting: counts only change at events
                span = now - self.clock
                run.busy_replica_seconds += self.n_busy * span
                run.idle_replica_seconds += (self.n_up - self.n_busy) * span
                self.clock = now
            if t_done <= now:
                self._complete(now)
            elif t_ready <= now:
                self._ready(now)
            elif t_timeout <= now:
                waiters.popleft()
                run.timed_out += 1
                self.recorder.leave(now)
                if self.limit is not None:
                    self.limit.done(now)
            elif t_arrive <= now:
                poke = False
                while index < count and arrivals[index] == now:
                    poke |= self._arrive(now, durations[index])
                    index += 1
                if poke:  # the activator, debounced as the controller's call_soon flush
                    self._decide(now, self.recorder.instant(now, len(waiters), now), "activator")
            else:
                self._decide(tick, self.recorder.sample(tick, len(waiters), tick), "tick")
                k += 1
                tick = start + k * tick_s  # not accumulated: no drift over 86,400 ticks
        final = max(end, self.clock)
        run.busy_replica_seconds += self.n_busy * (final - self.clock)
        run.idle_replica_seconds += (self.n_up - self.n_busy) * (final - self.clock)
        return run

    # -- the controller: decide, then reconcile --------------------------------------
    def _decide(self, now: float, sample: MetricSample, source: str) -> None:
        self.policy.observe(sample)
        counts = self.counts
        if counts.ready != self.n_ready or counts.starting != self.n_starting:
            counts = self.counts = ReplicaCounts(self.n_ready, self.n_starting)
        decision = self.policy.decide(now, counts)
        self.desired = decision.desired
        if self.record:
            self.run.decisions.append(DecisionRecord(now, decision.desired, decision.mode, counts.ready,
                                                     counts.starting, decision.reason, source,
                                                     sample.average_concurrency))
        self._scale(now)

    def _scale(self, now: float) -> None:
        """As ``Reconciler._scale``: start the missing replicas; for a surplus, cancel the
        newest starting replicas first (unless requests wait for them), then drain ready
        ones, the least busy first."""
        total = self.n_ready + self.n_starting
        if self.desired > total:
            for _ in range(self.desired - total):
                self._start(now)
            return
        excess = total - self.desired
        while excess > 0 and self.starting and not self.waiters:
            replica = self.starting.pop()[1]
            del self.replicas[replica.key]
            self.n_starting -= 1
            self.n_up -= 1
            excess -= 1
        if excess > 0 and self.n_ready:
            ready = [r for r in self.replicas.values() if r.state == _READY]
            ready.sort(key=_inflight)  # stable: ties keep creation order, as live
            for replica in ready[:excess]:
                self._drain(replica)
            self.ready = [r for r in self.ready if r.state == _READY]
            self.free = [r for r in self.free if r.state == _READY]

    def _start(self, now: float) -> None:
        replica = _Replica(self.run.replicas_started)
        self.replicas[replica.key] = replica
        self.starting.append((now + self.cold_s, replica))
        self.n_starting += 1
        self.n_up += 1
        self.run.replicas_started += 1
        self.run.peak_replicas = max(self.run.peak_replicas, self.n_up)

    def _drain(self, replica: _Replica) -> None:
        replica.state = _DRAINING
        self.n_ready -= 1
        if replica.inflight == 0:
            self._remove(replica)

    def _remove(self, replica: _Replica) -> None:
        del self.replicas[replica.key]
        self.n_up -= 1

    # -- the pool: slots and the queue ---------------------------------------------------
    def _pick(self) -> _Replica | None:
        """A free slot. Live picks the less loaded of two random free replicas; here the
        least loaded (with one slot per replica, every free replica is alike)."""
        if self.cap == 1:
            return self.free.pop() if self.free else None
        best: _Replica | None = None
        for replica in self.ready:
            if replica.inflight < self.cap and (best is None or replica.inflight < best.inflight):
                best = replica
        return best

    def _arrive(self, now: float, duration_s: float) -> bool:
        """True when the request has to wait (and so pokes the activator)."""
        run = self.run
        run.invocations += 1
        if self.limit is not None and not self.limit.try_admit():
            run.shed += 1  # refused at once, as the dispatcher's admission does
            return False
        self.recorder.enter(now)
        replica = None if self.waiters else self._pick()  # nobody jumps the queue
        if replica is not None:
            self._dispatch(replica, now, duration_s, now)
            return False
        if len(self.waiters) >= self.settings.max_queued:
            run.shed += 1
            self.recorder.leave(now)
            if self.limit is not None:
                self.limit.done(now)
            return False
        self.waiters.append((now, duration_s))
        return True

    def _dispatch(self, replica: _Replica, arrived: float, duration_s: float, now: float) -> None:
        if replica.inflight == 0:
            self.n_busy += 1
        replica.inflight += 1
        done = now + duration_s
        heapq.heappush(self.running, (done, self.seq, replica, arrived, duration_s))
        self.seq += 1
        run = self.run
        run.served += 1
        run.latencies_ms.append((done - arrived) * 1000.0)
        if replica.ready_at > arrived:  # the dispatcher's cold-start test
            run.cold_starts += 1

    def _serve_waiters(self, now: float) -> None:
        waiters = self.waiters
        while waiters:
            replica = self._pick()
            if replica is None:
                return
            arrived, duration_s = waiters.popleft()
            self._dispatch(replica, arrived, duration_s, now)

    def _complete(self, now: float) -> None:
        _, _, replica, arrived, duration_s = heapq.heappop(self.running)
        self.recorder.leave(now)
        if self.limit is not None:
            if replica.ready_at > arrived:  # a cold start's wait says nothing of the limit
                self.limit.done(now)
            else:
                self.limit.done(now, now - arrived, duration_s)
        replica.inflight -= 1
        if replica.inflight == 0:
            self.n_busy -= 1
        if replica.state == _READY:
            if self.cap == 1:
                self.free.append(replica)
            if self.waiters:
                self._serve_waiters(now)
        elif replica.inflight == 0:  # draining and done: the backend stops it
            self._remove(replica)

    def _ready(self, now: float) -> None:
        replica = self.starting.popleft()[1]
        replica.state = _READY
        replica.ready_at = now
        self.n_starting -= 1
        self.n_ready += 1
        self.ready.append(replica)
        if self.cap == 1:
            self.free.append(replica)
        self._serve_waiters(now)
        self._scale(now)  # replica_ready -> schedule(unit): reconcile with the last decision


def simulate(invocations: Iterable[Invocation], policy_factory: PolicyFactory,
             settings: SimSettings | None = None) -> SimReport:
    """Simulate every deployment of the trace, each with a fresh policy from the factory.

    Deployments share the clock span (``start_s``..``end_s``) so their idle time compares;
    ticks run all through it, busy or not, because policies pre-warm on time alone.
    """
    settings = settings or SimSettings()
    groups: dict[str, tuple[list[float], list[float]]] = {}
    for timestamp, deployment, duration_ms in invocations:
        group = groups.get(deployment)
        if group is None:
            group = groups[deployment] = ([], [])
        if not duration_ms >= 0:
            raise ValueError(f"invocation of {deployment} at {timestamp}: duration {duration_ms} ms")
        group[0].append(float(timestamp))
        group[1].append(duration_ms / 1000.0)
    runs: list[DeploymentRun] = []
    if groups:
        first = min(min(group[0]) for group in groups.values())
        last = max(max(group[0]) for group in groups.values())
        start = settings.start_s if settings.start_s is not None else \
            math.floor(first / settings.tick_s) * settings.tick_s
        end = settings.end_s if settings.end_s is not None else last
        if start > first:
            raise ValueError(f"start_s {start:g} is after the first arrival at {first:g}")
        for name in sorted(groups):
            arrivals, durations = groups[name]
            if not _sorted(arrivals):
                order = sorted(range(len(arrivals)), key=arrivals.__getitem__)
                arrivals = [arrivals[i] for i in order]
                durations = [durations[i] for i in order]
            sim = _DeploymentSim(name, policy_factory(), settings, start)
            runs.append(sim.simulate(arrivals, durations, start, end))
    return SimReport.build(runs, settings.prices, settings.memory_gb)


def _sorted(values: list[float]) -> bool:
    return all(a <= b for a, b in pairwise(values))
