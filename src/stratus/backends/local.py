"""The local backend: replicas and job workers are processes on this host, forked from warm
zygotes.

One Unix socket in the run directory accepts every connection: profile zygotes, revision
zygotes, replicas and job workers each say who they are in their first frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from stratus.backends.base import (
    CodeSpec,
    HandleState,
    ReplicaEvents,
    ReplicaHandle,
    ReplicaSpec,
    WorkerHandle,
    WorkerSink,
    WorkerSpec,
)
from stratus.backends.handover import BackendHandover, adopt, hand_over_children
from stratus.backends.isolation import Isolation
from stratus.backends.orphans import reap
from stratus.backends.readahead import read_ahead
from stratus.backends.renice import renice
from stratus.backends.workers import JobWorkers, LocalWorker
from stratus.backends.zygotes import ProfileZygote, RevisionZygote, spawn_profile
from stratus.dispatch.channel import ReplicaChannel
from stratus.errors import DeployError, Unavailable
from stratus.runtime import messages
from stratus.runtime.connection import Endpoint, FramedConnection
from stratus.runtime.sandbox import SandboxConfig, SandboxError

log = logging.getLogger("stratus.backend")

ZYGOTE_START_TIMEOUT_S = 300.0  # importing the preloads (torch) on a cold page cache
IMPORT_TIMEOUT_S = 300.0
KILL_GRACE_S = 5.0


class LocalBackend:
    """Runs replicas as local processes forked from per-profile, per-revision zygotes."""

    def __init__(self, run_dir: Path, log_dir: Path, isolation: Isolation | None = None,
                 inherited: BackendHandover | None = None) -> None:
        self.run_dir = run_dir
        self.log_dir = log_dir
        # The server passes Isolation.for_settings(...); without it, no namespace users.
        self.isolation = isolation or Isolation(SandboxConfig(run_as="server"), run_dir.parent,
                                                run_dir, log_dir)
        self.socket_path = self._socket_path(run_dir)
        self.events: ReplicaEvents | None = None
        self.server: asyncio.AbstractServer | None = None
        self.profiles: dict[str, ProfileZygote] = {}
        self.revisions: dict[str, RevisionZygote] = {}
        self.handles: dict[str, ReplicaHandle] = {}
        self._kill_timers: dict[str, asyncio.TimerHandle] = {}
        self._stopped: set[str] = set()  # replicas the server asked to end
        self._zygote_lock = asyncio.Lock()
        self.workers = JobWorkers(self.isolation, self.revisions, self.prepare)
        self.inherited = inherited  # what the server before this one's exec handed over
        self.adopted: list[ReplicaHandle] = []  # its replicas, until a pool claims them
        self.handed: BackendHandover | None = None  # what close(hand_over=True) hands on

    @staticmethod
    def _socket_path(run_dir: Path) -> str:
        path = run_dir / "stratus.sock"
        if len(str(path)) < 100:
            return str(path)
        # sun_path holds 108 bytes; a deep data dir falls back to a private temp dir.
        return os.path.join(tempfile.mkdtemp(prefix="stratus-"), "s.sock")

    # -- lifecycle --------------------------------------------------------------
    async def open(self, events: ReplicaEvents) -> None:
        self.events = events
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.inherited is None:  # else its zygotes and replicas are this server's now
            await asyncio.to_thread(reap, self.socket_path)  # a server that died left them
        self.isolation.open(adopting=self.inherited is not None)
        loop = asyncio.get_running_loop()
        self.server = await loop.create_unix_server(
            lambda: FramedConnection(self._accept), self.socket_path
        )
        os.chmod(self.socket_path, 0o600)
        self.isolation.socket_created(self.socket_path)
        self.workers.socket_path = self.socket_path
        if self.inherited is not None:
            self.adopted = await adopt(self, self.inherited)

    def adoptable(self, namespace: str, deployment: str, revision: int) -> list[ReplicaHandle]:
        claimed = [h for h in self.adopted if h.replica_id in self.handles and
                   (h.namespace, h.deployment, h.revision) == (namespace, deployment, revision)]
        self.adopted = [h for h in self.adopted if h not in claimed]
        return claimed

    def unclaimed(self) -> list[ReplicaHandle]:
        left, self.adopted = self.adopted, []
        return left

    async def close(self, hand_over: bool = False) -> None:
        self.events = None  # replicas exiting now are expected: nothing to react to
        if hand_over:  # a takeover: what runs goes on, for the server this one execs
            self.handed = await hand_over_children(self, self._kill)
            self._close_socket()
            return
        for handle in list(self.handles.values()):
            if handle.channel is not None:
                handle.channel.stop(0)
        for zygote in list(self.revisions.values()):
            if zygote.connection is not None:
                zygote.connection.send(messages.Shutdown(messages.SHUTDOWN))
        for profile in list(self.profiles.values()):
            if profile.process.returncode is None:
                profile.process.terminate()
        for profile in list(self.profiles.values()):
            try:
                await asyncio.wait_for(profile.process.wait(), KILL_GRACE_S)
            except TimeoutError:
                if profile.process.returncode is None:
                    profile.process.kill()
        self._close_socket()
        self.isolation.close()

    def _close_socket(self) -> None:
        if self.server is not None:
            self.server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)

    # -- connections ------------------------------------------------------------
    def _accept(self, hello: messages.ToServer, connection: FramedConnection) -> Endpoint | None:
        # Replica users can reach this socket: each hello must come from the very process
        # it names, a child of the process that forked it (the kernel's SO_PEERCRED).
        if isinstance(hello, messages.HelloProfile):
            profile = self.profiles.get(hello.profile_key)
            if profile is None or not self.isolation.peer_is(
                    connection.peer(), profile.process.pid, None, None):
                return None
            profile.connection = connection
            if hello.preload_errors:
                log.warning("profile %s: preloads failed to import: %s", hello.profile_key,
                            hello.preload_errors)
            if not profile.hello.done():
                profile.hello.set_result(connection)
            return profile
        if isinstance(hello, messages.HelloRevision):
            zygote = self.revisions.get(hello.code_key)
            if zygote is None or zygote.connection is not None:
                return None
            pid = int(hello.pid)
            if not hello.ok and zygote.forked_pid is None and self.isolation.peer_is(
                    connection.peer(), pid, None, zygote.namespace):
                # Its import failed and it may be gone before its parent's FORKED is read.
                zygote.import_failure = (pid, str(hello.meta_or_error), hello.traceback)
                return None
            if not self.isolation.vouches(connection.peer(), pid, zygote.forked_pid,
                                          zygote.profile_pid, zygote.namespace):
                return None
            zygote.connection = connection
            zygote.pid = pid
            if hello.ok:
                zygote.loaded.set_result(dict(hello.meta_or_error))
            else:
                zygote.fail(str(hello.meta_or_error), hello.traceback)
            return zygote
        if isinstance(hello, messages.HelloReplica):
            return self._accept_replica(hello, connection)
        if isinstance(hello, messages.HelloJob):
            return self.workers.accept(hello, connection)
        return None

    def _accept_replica(self, hello: messages.HelloReplica,
                        connection: FramedConnection) -> Endpoint | None:
        replica_id = hello.replica_id
        handle = self.handles.get(replica_id)
        if handle is None or self.events is None or handle.channel is not None:
            return None
        zygote = self.revisions.get(handle.code_key)
        if zygote is None:
            return None
        pid = int(hello.pid)
        if not hello.ok and handle.pid is None and self.isolation.peer_is(
                connection.peer(), pid, None, zygote.namespace):
            # A replica whose init failed may be gone (reaped) before its zygote's FORKED is
            # read: what it said waits for that report to vouch for its pid (on_exited).
            handle.init_failure = (pid, f"init failed: {hello.init_ms_or_error}", hello.traceback)
            return None
        if not self.isolation.vouches(connection.peer(), pid, handle.pid, zygote.pid,
                                      zygote.namespace):
            log.warning("refused a hello for replica %s from a process that is not it",
                        replica_id)
            return None
        handle.pid = pid
        if not hello.ok:
            handle.state = HandleState.EXITED
            self.events.replica_failed(replica_id, f"init failed: {hello.init_ms_or_error}",
                                       hello.traceback)
            return None
        channel = ReplicaChannel(replica_id, pid, connection)
        channel.on_lost = self.channel_lost
        handle.channel = channel
        handle.state = HandleState.RUNNING
        self.events.replica_ready(replica_id, channel, float(hello.init_ms_or_error))
        return channel

    def channel_lost(self, channel: ReplicaChannel) -> None:
        # The zygote's EXITED report and the socket's EOF race; either one retires the
        # replica (the events are idempotent), so neither order leaves a dead replica routed.
        handle = self.handles.get(channel.replica_id)
        if handle is not None:
            handle.state = HandleState.EXITED
        if self.events is not None:
            self.events.replica_lost(channel.replica_id)

    def replica_forked(self, zygote: RevisionZygote, replica_id: str, pid: int) -> None:
        if self.workers.forked(zygote, replica_id, pid):
            return
        handle = self.handles.get(replica_id)
        if handle is not None and handle.code_key == zygote.code_key:
            handle.pid = int(pid)
            self.isolation.forked(handle.replica_id, handle.pid, zygote.pid)

    def revision_closed(self, zygote: RevisionZygote) -> None:
        if self.revisions.get(zygote.code_key) is zygote:
            del self.revisions[zygote.code_key]
        self.workers.zygote_closed(zygote.code_key)

    def on_exited(self, replica_id: str, returncode: int, reason: str,
                  out_of_memory: bool = False, usage: tuple[float, int] = (0.0, 0)) -> None:
        if self.workers.exited(replica_id, returncode, reason, out_of_memory, usage):
            return
        handle = self.handles.pop(replica_id, None)
        timer = self._kill_timers.pop(replica_id, None)
        if timer is not None:
            timer.cancel()
        ending = self.isolation.exited(replica_id, returncode)
        if ending is not None:  # the kernel's word on why beats the zygote's
            reason, out_of_memory = ending.reason, out_of_memory or ending.out_of_memory
        requested = replica_id in self._stopped
        self._stopped.discard(replica_id)
        if handle is None:
            return
        if handle.channel is not None:
            handle.channel.record_exit(returncode, reason, out_of_memory)
            if reason or returncode != 0:
                log.warning("replica %s of %s/%s exited: %s", replica_id, handle.namespace,
                            handle.deployment, handle.channel.describe_loss())
                if not requested and self.events is not None:
                    self.events.replica_exited(handle.namespace, handle.deployment, replica_id,
                                               handle.channel.describe_loss(), out_of_memory)
            if self.events is not None:
                self.events.replica_lost(replica_id)
        elif handle.state is HandleState.STARTING and self.events is not None:
            handle.state = HandleState.EXITED
            failure = handle.init_failure
            if failure is not None and failure[0] == handle.pid:
                self.events.replica_failed(replica_id, failure[1], failure[2])
                return
            described = reason or _describe(returncode)
            self.events.replica_failed(replica_id, f"replica died during init ({described})", None)

    # -- zygotes ----------------------------------------------------------------
    async def _profile(self, code: CodeSpec) -> ProfileZygote:
        async with self._zygote_lock:
            profile = self.profiles.get(code.profile)
            if profile is None or profile.process.returncode is not None:
                spawned = await spawn_profile(self.socket_path, code, self.log_dir / "zygotes.log",
                                              self.isolation.profile_env())
                profile = ProfileZygote(code.profile, spawned, self.revisions)
                self.profiles[code.profile] = profile
        if profile.hello.done():
            return profile
        # Every caller waits for the hello, not only the one that started the zygote: a
        # concurrent one would otherwise find it started but not yet connected.
        process = profile.process
        exited: asyncio.Future[Any] = asyncio.ensure_future(process.wait())
        waiting: set[asyncio.Future[Any]] = {profile.hello, exited}
        done, _ = await asyncio.wait(waiting, timeout=ZYGOTE_START_TIMEOUT_S,
                                     return_when=asyncio.FIRST_COMPLETED)
        exited.cancel()
        if profile.hello not in done:
            if process.returncode is None:
                process.kill()
            if self.profiles.get(code.profile) is profile:
                del self.profiles[code.profile]
            raise Unavailable(f"the {code.profile!r} zygote failed to start; see logs/zygotes.log")
        return profile

    async def prepare(self, code: CodeSpec) -> dict[str, Any]:
        zygote = self.revisions.get(code.code_key)
        if zygote is None:
            profile = await self._profile(code)
            zygote = self.revisions.get(code.code_key)
            if zygote is None:
                try:
                    sandbox = self.isolation.zygote(code)
                except (SandboxError, OSError) as exc:
                    raise Unavailable(f"cannot set up the zygote's sandbox: {exc}") from None
                zygote = RevisionZygote(code, profile.process.pid,
                                        on_replica_forked=self.replica_forked,
                                        on_replica_exited=self.on_exited,
                                        on_closed=self.revision_closed)
                self.revisions[code.code_key] = zygote
                assert profile.connection is not None
                load = {"bundle_dir": code.bundle_dir, "entrypoint": code.entrypoint,
                        "env": code.env, "sandbox": sandbox.to_wire(), "kind": code.kind}
                profile.connection.send(messages.Load(messages.LOAD, code.code_key, load))
        try:
            return await asyncio.wait_for(asyncio.shield(zygote.loaded), IMPORT_TIMEOUT_S)
        except DeployError:
            self.revisions.pop(code.code_key, None)
            raise
        except TimeoutError:
            self.revisions.pop(code.code_key, None)
            raise DeployError(f"importing {code.entrypoint} took over {IMPORT_TIMEOUT_S:g}s") from None

    async def release(self, code_key: str) -> None:
        zygote = self.revisions.pop(code_key, None)
        if zygote is not None and zygote.connection is not None:
            zygote.connection.send(messages.Shutdown(messages.SHUTDOWN))

    # -- replicas ---------------------------------------------------------------
    async def start(self, spec: ReplicaSpec) -> ReplicaHandle:
        if spec.config.models:
            # Not awaited: the reads proceed beside the fork and the init.
            asyncio.get_running_loop().run_in_executor(None, read_ahead, spec.config.models)
        await self.prepare(spec.code)
        zygote = self.revisions[spec.code.code_key]
        try:
            sandbox = self.isolation.replica(spec)
        except (SandboxError, OSError) as exc:
            self.isolation.exited(spec.replica_id, 0)
            raise Unavailable(f"cannot set up the replica's sandbox: {exc}") from None
        config = dataclasses.replace(spec.config, socket_path=self.socket_path,
                                     sandbox=sandbox.to_wire())
        handle = ReplicaHandle(replica_id=spec.replica_id, code_key=spec.code.code_key,
                               namespace=spec.config.namespace,
                               deployment=spec.config.deployment, revision=spec.config.revision)
        self.handles[spec.replica_id] = handle
        try:
            zygote.send(messages.Fork(messages.FORK, spec.replica_id, dataclasses.asdict(config)))
        except Unavailable:
            self.handles.pop(spec.replica_id, None)
            self.isolation.exited(spec.replica_id, 0)
            raise
        return handle

    async def stop(self, handle: ReplicaHandle, drain: bool, reason: str = "") -> None:
        if handle.replica_id not in self.handles:
            return
        self._stopped.add(handle.replica_id)
        if drain and handle.channel is not None and not handle.channel.closed:
            handle.state = HandleState.STOPPING
            handle.channel.stop(0)
            # A replica that does not exit after being asked is killed.
            self._kill_timers[handle.replica_id] = asyncio.get_running_loop().call_later(
                KILL_GRACE_S, self._kill, handle, reason or "did not exit after STOP"
            )
        else:
            self._kill(handle, reason or "stopped")

    def _kill(self, handle: ReplicaHandle, reason: str) -> None:
        self._kill_timers.pop(handle.replica_id, None)
        zygote = self.revisions.get(handle.code_key)
        if zygote is not None and zygote.connection is not None:
            zygote.connection.send(messages.Kill(messages.KILL, handle.replica_id, reason))
        elif handle.pid is not None:
            with contextlib.suppress(ProcessLookupError):  # zygote gone: signal the orphan
                os.kill(handle.pid, 9)
            self.handles.pop(handle.replica_id, None)
            self._stopped.discard(handle.replica_id)
            self.isolation.exited(handle.replica_id, -9)

    async def start_worker(self, spec: WorkerSpec, sink: WorkerSink) -> WorkerHandle:
        return await self.workers.start(spec, sink)

    def stop_worker(self, handle: WorkerHandle, reason: str) -> None:
        if isinstance(handle, LocalWorker):
            self.workers.stop(handle, reason)

    def list(self) -> list[ReplicaHandle]:
        return list(self.handles.values())

    def set_priority(self, handle: ReplicaHandle, background: bool) -> None:
        if handle.pid is not None:
            renice(handle.pid, background, handle.replica_id)


def _describe(returncode: int) -> str:
    return f"killed by signal {-returncode}" if returncode < 0 else f"exit code {returncode}"

