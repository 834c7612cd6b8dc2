"""The draining server's reading of signals, with its clock injected: SIGTERM makes it
unready and keeps it serving for the grace period; SIGINT stops at once, twice forces."""

from __future__ import annotations

import asyncio
import signal
from types import SimpleNamespace
from typing import Any

import uvicorn

from stratus.gateway.drain import DrainingServer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _server(grace_s: float) -> tuple[DrainingServer, Any, Clock]:
    parts = SimpleNamespace(ready=True, draining=False)
    clock = Clock()
    app: Any = SimpleNamespace(components=parts)
    server = DrainingServer(uvicorn.Config(app), app, grace_s, monotonic=clock)
    server.started = True
    return server, parts, clock


def _tick(server: DrainingServer) -> bool:
    return asyncio.run(server.on_tick(1))


def test_sigterm_unready_at_once_and_exit_after_the_grace_period() -> None:
    server, parts, clock = _server(5.0)
    server.handle_exit(signal.SIGTERM, None)
    assert (parts.ready, parts.draining) == (False, True)
    assert not server.should_exit and not _tick(server)
    clock.now += 4.9
    assert not _tick(server)
    clock.now += 0.1
    assert _tick(server) and server.should_exit and not server.force_exit


def test_a_signal_in_the_grace_period_ends_it_and_a_sigint_after_forces() -> None:
    server, _parts, _clock = _server(30.0)
    server.handle_exit(signal.SIGTERM, None)
    server.handle_exit(signal.SIGTERM, None)
    assert server.should_exit and not server.force_exit
    # uvicorn raises the signals it captured again once stopped: a SIGTERM would end the
    # process by the signal (exit 143), not with 0.
    assert server._captured_signals == []
    server.handle_exit(signal.SIGINT, None)
    assert server.force_exit


def test_sigint_skips_the_grace_period_and_twice_forces() -> None:
    server, parts, _clock = _server(30.0)
    server.handle_exit(signal.SIGINT, None)
    assert server.should_exit and not server.force_exit and parts.draining
    server.handle_exit(signal.SIGINT, None)
    assert server.force_exit


def test_sigterm_before_start_up_stops_at_once() -> None:
    server, _parts, _clock = _server(30.0)
    server.started = False
    server.handle_exit(signal.SIGTERM, None)
    assert server.should_exit
