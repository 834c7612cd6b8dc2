"""The data path to one replica: sends REQUEST frames and matches the answers to futures;
the CHUNK frames of a streamed answer go to the request's sink as they arrive."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from stratus.errors import OutOfMemory, ReplicaLost
from stratus.runtime import wire
from stratus.runtime.connection import FramedConnection
from stratus.runtime.memory import Memory
from stratus.runtime.messages import (
    CANCEL,
    REQUEST,
    STOP,
    Answer,
    Cancel,
    Chunk,
    Error,
    Heartbeat,
    Request,
    Response,
    Spans,
    Stop,
    ToServer,
)
from stratus.telemetry import tracing

# Receives (payload kind, payload) for each CHUNK of a streamed answer.
ChunkSink = Callable[[int, Any], None]

# How long a lost connection waits for the zygote to say why the replica died.
EXIT_REASON_WAIT_S = 0.25


class ReplicaChannel:
    """Server side of a replica's socket. Futures resolve to the Response or Error message."""

    def __init__(self, replica_id: str, pid: int, connection: FramedConnection) -> None:
        self.replica_id = replica_id
        self.pid = pid
        self.connection = connection
        self.loop = asyncio.get_running_loop()
        self.pending: dict[int, asyncio.Future[Answer]] = {}
        self.sinks: dict[int, ChunkSink] = {}
        # Requests sent asking to be acknowledged, and whether the replica has taken each for
        # its handler: a loss before that proves the request never ran, so it may be resent.
        self.acks: dict[int, bool] = {}
        self.next_rid = 1
        self.closed = False
        self.last_seen = time.monotonic()
        self.memory = Memory()  # from the latest heartbeat
        self.peak_rss = 0  # the most resident memory the replica has had (bytes), for usage
        self.handler_stats: dict[str, float] = {}  # the handler's gauges, from the heartbeat
        # Receives each heartbeat's batch-size deltas; set by whoever knows the deployment.
        self.on_batch_sizes: Callable[[Any], None] | None = None
        self.exit_reason: str | None = None
        self.out_of_memory = False  # it went over its memory limit
        self.on_lost: Callable[[ReplicaChannel], None] | None = None
        self._fail_handle: asyncio.TimerHandle | None = None

    def request(
        self, kind: int, payload: Any, meta: dict[str, Any], sink: ChunkSink | None = None,
        ack: bool = False,
    ) -> tuple[int, asyncio.Future[Answer]]:
        """Send one request. With ``ack``, the replica says when it takes the request for its
        handler (``meta["ack"]``), so that a loss can tell whether the handler ever saw it."""
        transport = self.connection.transport
        if self.closed or transport is None or transport.is_closing():
            # Nothing was sent, so nothing ran: never this request's out-of-memory, whatever
            # killed the replica.
            lost = ReplicaLost(f"replica {self.replica_id} is gone: {self.describe_loss()}")
            lost.sent = lost.reached_handler = False
            raise lost
        rid = self.next_rid
        self.next_rid = rid + 1
        if ack:
            meta["ack"] = True
        # First, so that a payload that cannot be encoded leaves nothing behind; no answer
        # can arrive before this returns (one loop).
        self.connection.send(Request(REQUEST, rid, kind, payload, meta))
        future: asyncio.Future[Answer] = self.loop.create_future()
        self.pending[rid] = future
        if sink is not None:
            self.sinks[rid] = sink
        if ack:
            self.acks[rid] = False
        return rid, future

    def cancel(self, rid: int) -> None:
        """Ask the replica to cancel a request; its answer (if any) still arrives."""
        self.sinks.pop(rid, None)
        self.connection.send(Cancel(CANCEL, rid))

    def stop(self, drain_timeout_s: float) -> None:
        self.connection.send(Stop(STOP, drain_timeout_s))

    # -- Endpoint ---------------------------------------------------------------
    def on_message(self, message: ToServer) -> None:
        self.last_seen = time.monotonic()
        if isinstance(message, Chunk):
            if message.kind == wire.KIND_STARTED:
                if message.rid in self.acks:
                    self.acks[message.rid] = True
                return
            sink = self.sinks.get(message.rid)
            if sink is not None:
                sink(message.kind, message.payload)
        elif isinstance(message, (Response, Error)):
            self.sinks.pop(message.rid, None)
            if self.acks:
                self.acks.pop(message.rid, None)
            future = self.pending.pop(message.rid, None)
            if future is not None and not future.done():
                future.set_result(message)
        elif isinstance(message, Spans):
            tracing.receive(self.replica_id, self.pid, message.records)
        elif isinstance(message, Heartbeat):
            reports = message.reports if isinstance(message.reports, dict) else {}
            self.memory = Memory(rss=int(message.rss), pss=int(message.pss),
                                 dirty=int(message.charged),
                                 shmem=int(reports.get("pss_shmem", 0)))
            self.handler_stats = reports.get("stats") or {}
            self.peak_rss = max(self.peak_rss, self.memory.rss, int(reports.get("peak_rss", 0)))
            if self.on_batch_sizes is not None and "batch_sizes" in reports:
                self.on_batch_sizes(reports["batch_sizes"])

    def on_close(self) -> None:
        self.closed = True
        if self.on_lost is not None:
            self.on_lost(self)
        if self.exit_reason is not None or not self.pending:
            self._fail_pending()
        else:
            self._fail_handle = self.loop.call_later(EXIT_REASON_WAIT_S, self._fail_pending)

    # -- loss -------------------------------------------------------------------
    def record_exit(self, returncode: int | None, reason: str, out_of_memory: bool = False) -> None:
        """The zygote reported how the process ended: fail what is left with that reason."""
        self.out_of_memory = out_of_memory
        if reason:
            self.exit_reason = reason
        elif returncode is not None and returncode < 0:
            self.exit_reason = f"replica was killed by signal {-returncode}"
        elif returncode is not None:
            self.exit_reason = f"replica exited with code {returncode}"
        if self.closed:
            self._fail_pending()

    def describe_loss(self) -> str:
        return self.exit_reason or "connection to the replica was lost"

    def _fail_pending(self) -> None:
        if self._fail_handle is not None:
            self._fail_handle.cancel()
            self._fail_handle = None
        pending, self.pending = self.pending, {}
        acks, self.acks = self.acks, {}
        self.sinks.clear()
        message = f"replica {self.replica_id} failed mid-request: {self.describe_loss()}"
        for rid, future in pending.items():
            if not future.done():
                # Unacknowledged: the replica died before its handler took the request. Without
                # an ack asked for, nothing says it did not: count it as reached.
                reached = acks.get(rid, True)
                # Out of memory is the doing of a request the handler took; one it never took
                # is lost like any other, and may be resent.
                lost = OutOfMemory(message) if self.out_of_memory and reached \
                    else ReplicaLost(message)
                lost.reached_handler = reached
                future.set_exception(lost)
