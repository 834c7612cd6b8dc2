"""uvicorn's server with a graceful drain: after SIGTERM the server is no longer ready but
still serves for a grace period, then stops as uvicorn does.

SIGTERM: ``/readyz`` answers 503 at once while requests are still accepted and served for
``grace_s``, long enough for a load balancer to notice; then uvicorn stops accepting, waits
for the requests in flight (streams included) and the app's lifespan drains and stops the
replicas, and the process exits with 0. A signal during the grace period ends it at once.
SIGINT (Ctrl+C) skips the grace period; a second SIGINT forces the exit without waiting for
requests or replicas (a zygote whose server is gone kills its replicas itself).

SIGUSR2 (``stratus serve --takeover``): a takeover (``takeover.py``). No grace period, since
the listening socket stays open and what arrives waits in it; idle connections are handed
on, busy ones answered with ``connection: close``; the lifespan hands its replicas on, and
the process execs the next version, which adopts all of it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import uvicorn

from stratus.gateway.dataplane import DataPlane
from stratus.gateway.takeover import Takeover, inheritable

log = logging.getLogger("stratus.server")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: DataPlane, grace_s: float,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__(config)
        self.app = app
        self.grace_s = grace_s
        self.monotonic = monotonic
        self.drain_until: float | None = None  # when the grace period ends, once it began
        self.inherited: Takeover | None = None  # what the version before this one handed on
        self.run_dir: Path | None = None  # where a takeover's report goes
        # Until the loop takes SIGUSR2 over (started), its default would kill the server.
        signal.signal(signal.SIGUSR2, self._not_yet)

    @staticmethod
    def _not_yet(sig: int, frame: FrameType | None) -> None:
        log.warning("SIGUSR2 ignored: the server is not serving yet, or no longer")

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.started:
            return
        loop = asyncio.get_running_loop()
        inherited = self.inherited
        if inherited is not None:
            protocol = functools.partial(
                self.config.http_protocol_class, config=self.config,  # type: ignore[call-arg]
                server_state=self.server_state, app_state=self.lifespan.state)
            for fd in inherited.connections:
                await loop.connect_accepted_socket(protocol, socket.socket(fileno=fd))
            replicas = len(inherited.backend.get("replicas", []))
            paused = inherited.report(self.run_dir, replicas) if self.run_dir else 0.0
            log.info("took over (generation %d): %d replicas and %d client connections "
                     "adopted; nothing was accepted for %.0f ms", inherited.generation, replicas,
                     len(inherited.connections), paused * 1000)
        loop.add_signal_handler(signal.SIGUSR2, self.take_over)

    def take_over(self) -> None:
        """SIGUSR2: stop, handing everything on, then exec the next version (``serve``)."""
        if self.should_exit or self.drain_until is not None:
            log.warning("SIGUSR2 ignored: the server is stopping")
            return
        takeover = Takeover(time.time(), self.inherited.generation if self.inherited else 0,
                            listen_fds=[inheritable(listener.fileno()) for server in self.servers
                                        for listener in server.sockets])
        self.server_state.stratus_takeover = takeover  # type: ignore[attr-defined]
        self.app.takeover = takeover  # the lifespan hands the replicas on, not stops them
        log.info("SIGUSR2: taking over; new connections wait in the socket")
        self.should_exit = True

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        await super().serve(sockets)
        takeover = self.app.takeover
        if takeover is not None:
            takeover.exec_next()  # returns only by failing

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain_until is None and not self.should_exit:
            self._not_ready()
            if sig == signal.SIGTERM and self.started:
                self.drain_until = self.monotonic() + self.grace_s
                log.info("SIGTERM: not ready; serving for %.1f s more, then draining",
                         self.grace_s)
                return  # on_tick stops the server when the grace period is over
        elif sig == signal.SIGINT and self.should_exit:
            log.warning("second SIGINT: exiting without waiting for requests or replicas")
        if sig == signal.SIGTERM:
            # Not through uvicorn, which would raise the signal again once stopped: the
            # process would end by it (143) instead of with the 0 a drain promises.
            self.should_exit = True
            return
        super().handle_exit(sig, frame)  # sets should_exit; once set, a SIGINT forces

    async def on_tick(self, counter: int) -> bool:
        if self.drain_until is not None and self.monotonic() >= self.drain_until \
                and not self.should_exit:
            log.info("grace period over: no new connections; draining")
            self.should_exit = True
        return await super().on_tick(counter)

    def _not_ready(self) -> None:
        parts = self.app.components
        if parts is not None:
            parts.ready = False
            parts.draining = True
