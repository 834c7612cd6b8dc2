"""uvicorn's server with a graceful drain: after SIGTERM the server is no longer ready but
still serves for a grace period, then stops as uvicorn does.

SIGTERM: ``/readyz`` answers 503 at once while requests are still accepted and served for
``grace_s``, long enough for a load balancer to notice; then uvicorn stops accepting, waits
for the requests in flight (streams included) and the app's lifespan drains and stops the
replicas, and the process exits with 0. A signal during the grace period ends it at once.
SIGINT (Ctrl+C) skips the grace period; a second SIGINT forces the exit without waiting for
requests or replicas (a zygote whose server is gone kills its replicas itself).
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from types import FrameType

import uvicorn

from stratus.gateway.dataplane import DataPlane

log = logging.getLogger("stratus.server")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: DataPlane, grace_s: float,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__(config)
        self.app = app
        self.grace_s = grace_s
        self.monotonic = monotonic
        self.drain_until: float | None = None  # when the grace period ends, once it began

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
