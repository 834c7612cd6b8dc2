"""Job workers of the local backend: forked from a revision zygote that imported the job's code
(FORK_JOB), sandboxed like replicas, each on its own connection to the server's socket.

A worker's exit is reported to its sink only once its connection has ended too: the zygote's
EXITED and the worker's last frames travel on different sockets, and the frames come first.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

from stratus.backends.base import CodeSpec, WorkerExit, WorkerSink, WorkerSpec
from stratus.backends.isolation import Isolation
from stratus.backends.zygotes import RevisionZygote
from stratus.errors import Unavailable
from stratus.runtime import messages
from stratus.runtime.connection import Endpoint, FramedConnection
from stratus.runtime.sandbox import SandboxError

log = logging.getLogger("stratus.backend")

LINGER_S = 5.0  # how long a worker's connection may outlive its exit (a child holding it)
RUNTIME_THREADS = 4  # the output capture and what the runtime starts besides the user's


class LocalWorker:
    """One job worker: the endpoint of its connection, and what the sink hears of it."""

    def __init__(self, spec: WorkerSpec, sink: WorkerSink) -> None:
        self.worker_id = spec.worker_id
        self.code_key = spec.code.code_key
        self.namespace = spec.code.namespace
        self.sink = sink
        self.pid: int | None = None
        self.connection: FramedConnection | None = None
        self.connected = False  # ever: a worker that never said hello has no frames to wait for
        self.exit: WorkerExit | None = None
        self.reported = False
        self._linger: asyncio.TimerHandle | None = None

    # -- the connection (an Endpoint) ---------------------------------------------------
    def on_message(self, message: messages.ToServer) -> None:
        if isinstance(message, messages.JobEventFrame | messages.JobCall | messages.JobDone):
            self.sink.worker_message(self, message)

    def on_close(self) -> None:
        self.connection = None
        self._report()

    # -- the WorkerHandle ---------------------------------------------------------------
    def reply(self, call_id: int, ok: bool, payload: object) -> None:
        if self.connection is not None:
            self.connection.send(messages.JobReply(messages.JOB_REPLY, call_id, ok, payload))

    def hold(self, paused: bool) -> None:
        transport = self.connection.transport if self.connection is not None else None
        if transport is not None and not transport.is_closing():
            if paused:
                transport.pause_reading()
            else:
                transport.resume_reading()

    # -- its end --------------------------------------------------------------------------
    def exited(self, ending: WorkerExit) -> None:
        if self.exit is None:
            self.exit = ending
        if self.connection is None:
            self._report()
        elif self._linger is None:
            self.hold(False)  # whatever it sent before it ended must be read
            self._linger = asyncio.get_running_loop().call_later(LINGER_S, self._cut)

    def _cut(self) -> None:
        """A process the worker started still holds its connection: stop waiting for it."""
        if self.connection is not None:
            self.connection.close()
        self.connection = None
        self._report()

    def _report(self) -> None:
        if self.exit is None or self.reported:
            return
        self.reported = True
        if self._linger is not None:
            self._linger.cancel()
        self.sink.worker_exited(self, self.exit)


class JobWorkers:
    """The local backend's job workers, by worker id. ``revisions`` is the backend's registry
    of revision zygotes; ``prepare`` brings up the one a job's code needs."""

    def __init__(self, isolation: Isolation, revisions: Mapping[str, RevisionZygote],
                 prepare: Callable[[CodeSpec], Awaitable[dict[str, Any]]]) -> None:
        self.isolation = isolation
        self.revisions = revisions
        self.prepare = prepare
        self.socket_path = ""  # the backend's, set when it opens
        self.workers: dict[str, LocalWorker] = {}

    async def start(self, spec: WorkerSpec, sink: WorkerSink) -> LocalWorker:
        await self.prepare(spec.code)
        zygote = self.revisions.get(spec.code.code_key)
        if zygote is None:
            raise Unavailable("the zygote for this job's code is gone")
        config = spec.config
        try:
            sandbox = self.isolation.process(
                spec.worker_id, config.namespace, "jobs", spec.code.bundle_dir, config.log_path,
                config.memory_mb, config.models, threads=config.threads + RUNTIME_THREADS)
            self.isolation.grant_files(config.namespace, [
                entry["path"] for layout in config.datasets.values()
                for entry in layout.get("files", {}).values() if entry.get("path")])
        except (SandboxError, OSError) as exc:
            self.isolation.exited(spec.worker_id, 0)
            raise Unavailable(f"cannot set up the job's sandbox: {exc}") from None
        config = dataclasses.replace(config, socket_path=self.socket_path,
                                     sandbox=sandbox.to_wire())
        worker = LocalWorker(spec, sink)
        self.workers[spec.worker_id] = worker
        try:
            zygote.send(messages.ForkJob(messages.FORK_JOB, spec.worker_id,
                                         dataclasses.asdict(config)))
        except Unavailable:
            self.workers.pop(spec.worker_id, None)
            self.isolation.exited(spec.worker_id, 0)
            raise
        return worker

    def stop(self, worker: LocalWorker, reason: str) -> None:
        zygote = self.revisions.get(worker.code_key)
        if zygote is not None and zygote.connection is not None:
            zygote.send(messages.Kill(messages.KILL, worker.worker_id, reason))
        elif worker.pid is not None:  # its zygote is gone: signal the group directly
            _kill_group(worker.pid)

    def accept(self, hello: messages.HelloJob, connection: FramedConnection) -> Endpoint | None:
        """A worker's hello: only the very process its zygote forked may speak for it."""
        worker = self.workers.get(hello.worker_id)
        if worker is None or worker.connection is not None or worker.connected:
            return None
        zygote = self.revisions.get(worker.code_key)
        pid = int(hello.pid)
        if zygote is None or not self.isolation.vouches(connection.peer(), pid, worker.pid,
                                                        zygote.pid, worker.namespace):
            log.warning("refused a hello for job worker %s from a process that is not it",
                        hello.worker_id)
            return None
        worker.pid = pid
        worker.connection = connection
        worker.connected = True
        return cast(Endpoint, worker)

    def forked(self, zygote: RevisionZygote, worker_id: str, pid: int) -> bool:
        """The zygote reports a fork; False when it is not a job worker's."""
        worker = self.workers.get(worker_id)
        if worker is None:
            return False
        if worker.code_key == zygote.code_key:
            worker.pid = int(pid)
            self.isolation.forked(worker_id, worker.pid, zygote.pid)  # into its cgroup
            worker.sink.worker_forked(worker, worker.pid)
        return True

    def exited(self, worker_id: str, returncode: int, reason: str, out_of_memory: bool,
               usage: tuple[float, int] = (0.0, 0)) -> bool:
        """The zygote reaped a process; False when it is not a job worker."""
        worker = self.workers.pop(worker_id, None)
        if worker is None:
            return False
        ending = self.isolation.exited(worker_id, returncode)
        if ending is not None:  # the kernel's word on why beats the zygote's
            reason, out_of_memory = ending.reason, out_of_memory or ending.out_of_memory
        worker.exited(WorkerExit(returncode, reason, out_of_memory, *usage))
        return True

    def zygote_closed(self, code_key: str) -> None:
        """A revision zygote died: its workers' exits will never be reported by it."""
        for worker in [w for w in self.workers.values() if w.code_key == code_key]:
            if worker.pid is not None:
                _kill_group(worker.pid)
            self.exited(worker.worker_id, -signal.SIGKILL, "the zygote it was forked from died",
                        False)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
