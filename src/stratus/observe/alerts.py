"""Alerts in the server: rules evaluated each second over recent outcomes, latency anomalies,
and one-shot events, each delivered to the log, a webhook and ``GET /api/alerts``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from stratus.dispatch.outcomes import Outcome
from stratus.observe.alert_rules import (
    AlertsConfig,
    LatencyBaseline,
    RuleConfig,
    Sample,
    latency_anomaly,
    next_state,
    rule_value,
)

log = logging.getLogger("stratus.alerts")

HISTORY = 200  # alerts kept for the API, firing or not
OUTBOX = 1000  # deliveries waiting for the webhook; beyond it the newest are dropped
# Samples kept per deployment, whatever the windows: bounds the work of a tick (a sort for p95).
WINDOW_MAX = 20_000
ANOMALY = "latency_anomaly"

Key = tuple[str, str]  # namespace, deployment


@dataclass
class Alert:
    """One episode of an alert, from firing to resolved; the webhook and the API show this."""

    name: str
    kind: str  # a rule's kind, "latency_anomaly" or "event" (one-shot)
    namespace: str
    deployment: str
    state: str  # firing or resolved
    value: float | None
    threshold: float | None
    since: float  # Unix seconds
    resolved_at: float | None
    message: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def alerts_config(section: dict[str, Any]) -> AlertsConfig:
    try:
        return AlertsConfig.model_validate(section)
    except ValueError as exc:
        raise ValueError(f"invalid alerts section of the config file: {exc}") from None


def _describe(rule: RuleConfig, value: float) -> str:
    if rule.kind == "p95_latency":
        return f"p95 latency {value:.1f} ms (threshold {rule.threshold:g} ms)"
    label = "error ratio" if rule.kind == "error_ratio" else "cold-start rate"
    return f"{label} {value:.3f} (threshold {rule.threshold:g})"


class AlertManager:
    def __init__(self, config: AlertsConfig) -> None:
        self.config = config
        self._windows: dict[Key, deque[Sample]] = {}
        self._baselines: dict[Key, LatencyBaseline] = {}
        self._anomalies: dict[Key, tuple[float, float, float]] = {}  # last: at, z, latency
        self._active: dict[tuple[str, str, str], Alert] = {}  # (name, namespace, deployment)
        self._history: deque[Alert] = deque(maxlen=HISTORY)
        self._outbox: asyncio.Queue[Alert] = asyncio.Queue(OUTBOX)
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None

    # -- the request path: O(1) per outcome -------------------------------------------
    def observe(self, outcome: Outcome) -> None:
        if outcome.shadow:  # nobody saw a shadow's answer; it is not the deployment's health
            return
        key = (outcome.namespace, outcome.deployment)
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = deque(maxlen=WINDOW_MAX)
        window.append(Sample(outcome.at, outcome.ok, outcome.latency_s, outcome.cold_start))
        anomaly = self.config.anomaly
        # A request that waited for a replica to start is slow for a known reason, counted by
        # the cold-start rules: it is neither judged nor made part of the baseline.
        if anomaly.enabled and outcome.ok and not outcome.cold_start:
            baseline = self._baselines.get(key)
            if baseline is None:
                baseline = self._baselines[key] = LatencyBaseline(
                    anomaly.window, anomaly.min_samples, anomaly.min_std_ms / 1000)
            z = latency_anomaly(baseline, outcome.latency_s, anomaly)
            if z is not None:
                self._anomalies[key] = (outcome.at, z, outcome.latency_s)

    # -- evaluation ----------------------------------------------------------------
    def evaluate(self, now: float) -> list[Alert]:
        """Move every alert to its new state; returns the ones that changed."""
        changed: list[Alert] = []
        horizon = now - self.config.longest_window_s
        for key, window in list(self._windows.items()):
            while window and window[0].at < horizon:
                window.popleft()
            for rule in self.config.rules:
                if rule.applies_to(*key):
                    changed.extend(self._judge(rule, key, window, now))
            if not window and not any(k[1:] == key for k in self._active):
                del self._windows[key]  # a deployment gone quiet (or deleted) costs nothing
        changed.extend(self._judge_anomalies(now))
        hold = self.config.event_hold_s
        for alert in self._history:
            if alert.kind == "event" and alert.state == "firing" and now - alert.since >= hold:
                alert.state, alert.resolved_at = "resolved", alert.since + hold
        return changed

    def _judge(self, rule: RuleConfig, key: Key, window: deque[Sample], now: float) -> list[Alert]:
        ident = (rule.name, *key)
        current = self._active.get(ident)
        value = rule_value(rule.kind, window, now - rule.window_s, rule.min_requests)
        firing = next_state(current is not None, value, rule.threshold,
                            not window or window[-1].at < now - rule.window_s)
        if firing and current is None:
            assert value is not None
            alert = Alert(rule.name, rule.kind, key[0], key[1], "firing", value, rule.threshold,
                          now, None, f"{key[0]}/{key[1]}: {_describe(rule, value)}")
            self._open(ident, alert)
            return [alert]
        if not firing and current is not None:
            del self._active[ident]
            current.state, current.resolved_at, current.value = "resolved", now, value
            shown = f"{value:.3g}" if value is not None else "no traffic"
            current.message = f"{key[0]}/{key[1]}: {rule.kind} back to {shown}"
            return [current]
        if current is not None and value is not None:
            current.value = value
        return []

    def _judge_anomalies(self, now: float) -> list[Alert]:
        changed = []
        quiet = self.config.anomaly.quiet_s
        for key, (at, z, latency) in list(self._anomalies.items()):
            ident = (ANOMALY, *key)
            current = self._active.get(ident)
            if now - at >= quiet:
                del self._anomalies[key]
                if current is not None:
                    del self._active[ident]
                    current.state, current.resolved_at = "resolved", now
                    current.message = f"{key[0]}/{key[1]}: no latency anomaly for {quiet:g} s"
                    changed.append(current)
            elif current is None:
                alert = Alert(ANOMALY, ANOMALY, key[0], key[1], "firing", round(z, 2),
                              self.config.anomaly.z, at, None,
                              f"{key[0]}/{key[1]}: a {latency * 1000:.1f} ms request is {z:.1f} "
                              f"standard deviations above the last "
                              f"{self.config.anomaly.window} latencies")
                self._open(ident, alert)
                changed.append(alert)
        return changed

    def one_shot(self, name: str, namespace: str, deployment: str, message: str) -> None:
        """An event that fires once and is not resolved by anything (a rollout rolled back)."""
        alert = Alert(name, "event", namespace, deployment, "firing", None, None, time.time(),
                      None, f"{namespace}/{deployment}: {message}")
        self._history.append(alert)
        self._deliver(alert)

    def _open(self, ident: tuple[str, str, str], alert: Alert) -> None:
        self._active[ident] = alert
        self._history.append(alert)

    # -- delivery --------------------------------------------------------------------
    def _deliver(self, alert: Alert) -> None:
        if alert.state == "firing":
            log.warning("ALERT firing %s: %s", alert.name, alert.message,
                        extra={"alert": alert.to_json()})
        else:
            log.info("ALERT resolved %s: %s", alert.name, alert.message,
                     extra={"alert": alert.to_json()})
        if self.config.webhook is not None:
            try:
                self._outbox.put_nowait(Alert(**alert.to_json()))  # as it is now, not later
            except asyncio.QueueFull:
                log.error("alert webhook backlog full; %s not sent", alert.name)

    async def _post(self, alert: Alert) -> None:
        hook = self.config.webhook
        assert hook is not None and self._client is not None
        payload = {"alert": alert.to_json()}
        for attempt in range(hook.retries + 1):
            try:
                response = await self._client.post(hook.url, json=payload,
                                                   headers=hook.headers, timeout=hook.timeout_s)
                if response.status_code < 300:
                    return
                problem = f"HTTP {response.status_code}"
                if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                    break  # the hook refuses this payload; sending it again changes nothing
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if attempt < hook.retries:
                await asyncio.sleep(hook.backoff_s * 2**attempt)
        log.error("alert %s (%s) not delivered to the webhook: %s", alert.name, alert.state,
                  problem)

    async def _send_loop(self) -> None:
        while True:
            alert = await self._outbox.get()
            try:
                await self._post(alert)
            except Exception:
                log.exception("alert webhook delivery failed")
            finally:
                self._outbox.task_done()

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.interval_s)
            try:
                for alert in self.evaluate(time.time()):
                    self._deliver(alert)
            except Exception:
                log.exception("evaluating alert rules failed")

    # -- lifecycle and view ----------------------------------------------------------------
    async def start(self) -> None:
        if self.config.webhook is not None:
            self._client = httpx.AsyncClient()
            self._tasks.append(asyncio.create_task(self._send_loop()))
        self._tasks.append(asyncio.create_task(self._tick_loop()))

    async def close(self, grace_s: float = 2.0) -> None:
        """Stop evaluating; give pending webhook deliveries ``grace_s`` to go out."""
        if self._client is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._outbox.join(), grace_s)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._client is not None:
            await self._client.aclose()

    def view(self) -> list[dict[str, Any]]:
        """Firing alerts first, then the rest, newest first."""
        kept = {id(alert) for alert in self._history}
        alerts = list(self._history) + [a for a in self._active.values() if id(a) not in kept]
        alerts.sort(key=lambda alert: alert.since, reverse=True)
        alerts.sort(key=lambda alert: alert.state != "firing")
        return [alert.to_json() for alert in alerts]
