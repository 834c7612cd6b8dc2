"""The local backend: replicas are processes on this host, forked from warm zygotes.

One Unix socket in the run directory accepts every connection: profile zygotes,
revision zygotes and replicas each say who they are in their first frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from stratus.backends.base import CodeSpec, HandleState, ReplicaEvents, ReplicaHandle, ReplicaSpec
from stratus.dispatch.channel import ReplicaChannel
from stratus.errors import DeployError, Unavailable
from stratus.runtime import wire
from stratus.runtime.connection import Endpoint, FramedConnection

log = logging.getLogger("stratus.backend")

ZYGOTE_START_TIMEOUT_S = 300.0  # importing the preloads (torch) on a cold page cache
IMPORT_TIMEOUT_S = 300.0
KILL_GRACE_S = 5.0
# Pool threads are created after the fork; none may exist in a zygote.
ZYGOTE_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class _ProfileZygote:
    def __init__(self, profile: str, process: asyncio.subprocess.Process) -> None:
        self.profile = profile
        self.process = process
        self.hello: asyncio.Future[FramedConnection] = asyncio.get_running_loop().create_future()
        self.connection: FramedConnection | None = None

    def on_message(self, message: list[Any]) -> None:
        pass

    def on_close(self) -> None:
        self.connection = None


class _RevisionZygote:
    """Server side of a revision zygote: FORK and KILL go out, FORKED and EXITED come back."""

    def __init__(self, backend: LocalBackend, code_key: str) -> None:
        self.backend = backend
        self.code_key = code_key
        self.loaded: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.connection: FramedConnection | None = None
        self.pid: int | None = None

    def on_message(self, message: list[Any]) -> None:
        kind = message[0]
        if kind == wire.FORKED:
            handle = self.backend.handles.get(message[1])
            if handle is not None:
                handle.pid = int(message[2])
        elif kind == wire.EXITED:
            self.backend.on_exited(message[1], int(message[3]), str(message[4]))

    def on_close(self) -> None:
        self.connection = None
        if not self.loaded.done():
            self.loaded.set_exception(DeployError("the zygote importing this code died"))
        if self.backend.revisions.get(self.code_key) is self:
            del self.backend.revisions[self.code_key]

    def send(self, message: list[Any]) -> None:
        if self.connection is None:
            raise Unavailable("the zygote for this revision is gone")
        self.connection.send(message)


class LocalBackend:
    """Runs replicas as local processes forked from per-profile, per-revision zygotes."""

    def __init__(self, run_dir: Path, log_dir: Path) -> None:
        self.run_dir = run_dir
        self.log_dir = log_dir
        self.socket_path = self._socket_path(run_dir)
        self.events: ReplicaEvents | None = None
        self.server: asyncio.AbstractServer | None = None
        self.profiles: dict[str, _ProfileZygote] = {}
        self.revisions: dict[str, _RevisionZygote] = {}
        self.handles: dict[str, ReplicaHandle] = {}
        self._kill_timers: dict[str, asyncio.TimerHandle] = {}
        self._zygote_lock = asyncio.Lock()

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
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)  # left by a server that did not shut down cleanly
        loop = asyncio.get_running_loop()
        self.server = await loop.create_unix_server(
            lambda: FramedConnection(self._accept), self.socket_path
        )
        os.chmod(self.socket_path, 0o600)

    async def close(self) -> None:
        self.events = None  # replicas exiting now are expected: nothing to react to
        for handle in list(self.handles.values()):
            if handle.channel is not None:
                handle.channel.stop(0)
        for zygote in list(self.revisions.values()):
            if zygote.connection is not None:
                zygote.connection.send([wire.SHUTDOWN])
        for profile in list(self.profiles.values()):
            if profile.process.returncode is None:
                profile.process.terminate()
        for profile in list(self.profiles.values()):
            try:
                await asyncio.wait_for(profile.process.wait(), KILL_GRACE_S)
            except TimeoutError:
                if profile.process.returncode is None:
                    profile.process.kill()
        if self.server is not None:
            self.server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)

    # -- connections ------------------------------------------------------------
    def _accept(self, hello: list[Any], connection: FramedConnection) -> Endpoint | None:
        kind = hello[0]
        if kind == wire.HELLO_PROFILE:
            profile = self.profiles.get(hello[1])
            if profile is None:
                return None
            profile.connection = connection
            if hello[3]:
                log.warning("profile %s: preloads failed to import: %s", hello[1], hello[3])
            if not profile.hello.done():
                profile.hello.set_result(connection)
            return profile
        if kind == wire.HELLO_REVISION:
            zygote = self.revisions.get(hello[1])
            if zygote is None:
                return None
            zygote.connection = connection
            zygote.pid = int(hello[2])
            if hello[3]:
                zygote.loaded.set_result(dict(hello[4]))
            else:
                zygote.loaded.set_exception(DeployError(str(hello[4]), detail=hello[5]))
            return zygote
        if kind == wire.HELLO_REPLICA:
            return self._accept_replica(hello, connection)
        return None

    def _accept_replica(self, hello: list[Any], connection: FramedConnection) -> Endpoint | None:
        _, replica_id, pid, ok, info, trace = hello
        handle = self.handles.get(replica_id)
        if handle is None or self.events is None:
            return None
        handle.pid = int(pid)
        if not ok:
            handle.state = HandleState.EXITED
            self.events.replica_failed(replica_id, f"init failed: {info}", trace)
            return None
        channel = ReplicaChannel(replica_id, int(pid), connection)
        channel.on_lost = self._on_channel_lost
        handle.channel = channel
        handle.state = HandleState.RUNNING
        self.events.replica_ready(replica_id, channel, float(info))
        return channel

    def _on_channel_lost(self, channel: ReplicaChannel) -> None:
        # The zygote's EXITED report and the socket's EOF race; either one retires the
        # replica (the events are idempotent), so neither order leaves a dead replica routed.
        handle = self.handles.get(channel.replica_id)
        if handle is not None:
            handle.state = HandleState.EXITED
        if self.events is not None:
            self.events.replica_lost(channel.replica_id)

    def on_exited(self, replica_id: str, returncode: int, reason: str) -> None:
        handle = self.handles.pop(replica_id, None)
        timer = self._kill_timers.pop(replica_id, None)
        if timer is not None:
            timer.cancel()
        if handle is None:
            return
        if handle.channel is not None:
            handle.channel.record_exit(returncode, reason)
            if reason or returncode != 0:
                log.warning("replica %s exited: %s", replica_id, handle.channel.describe_loss())
            if self.events is not None:
                self.events.replica_lost(replica_id)
        elif handle.state is HandleState.STARTING and self.events is not None:
            handle.state = HandleState.EXITED
            described = reason or (
                f"killed by signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
            )
            self.events.replica_failed(replica_id, f"replica died during init ({described})", None)

    # -- zygotes ----------------------------------------------------------------
    async def _profile(self, code: CodeSpec) -> _ProfileZygote:
        async with self._zygote_lock:
            profile = self.profiles.get(code.profile)
            if profile is not None and profile.process.returncode is None:
                return profile
            # The child inherits the descriptor; a one-off open is not worth a thread hop.
            log_file = open(self.log_dir / "zygotes.log", "ab")  # noqa: SIM115, ASYNC230
            try:
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "stratus.runtime.zygote",
                    "--socket", self.socket_path, "--profile", code.profile,
                    "--preload", ",".join(sorted(code.preload)),
                    stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                    env={**os.environ, **ZYGOTE_ENV},
                )
            finally:
                log_file.close()
            profile = _ProfileZygote(code.profile, process)
            self.profiles[code.profile] = profile
        exited: asyncio.Future[Any] = asyncio.ensure_future(process.wait())
        waiting: set[asyncio.Future[Any]] = {profile.hello, exited}
        done, _ = await asyncio.wait(waiting, timeout=ZYGOTE_START_TIMEOUT_S,
                                     return_when=asyncio.FIRST_COMPLETED)
        if profile.hello not in done:
            exited.cancel()
            if process.returncode is None:
                process.kill()
            self.profiles.pop(code.profile, None)
            raise Unavailable(f"the {code.profile!r} zygote failed to start; see logs/zygotes.log")
        exited.cancel()
        return profile

    async def prepare(self, code: CodeSpec) -> dict[str, Any]:
        zygote = self.revisions.get(code.code_key)
        if zygote is None:
            profile = await self._profile(code)
            zygote = self.revisions.get(code.code_key)
            if zygote is None:
                zygote = _RevisionZygote(self, code.code_key)
                self.revisions[code.code_key] = zygote
                assert profile.connection is not None
                load = {"bundle_dir": code.bundle_dir, "entrypoint": code.entrypoint,
                        "env": code.env}
                profile.connection.send([wire.LOAD, code.code_key, load])
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
            zygote.connection.send([wire.SHUTDOWN])

    # -- replicas ---------------------------------------------------------------
    async def start(self, spec: ReplicaSpec) -> ReplicaHandle:
        if spec.config.models:
            # Not awaited: the reads proceed beside the fork and the init.
            asyncio.get_running_loop().run_in_executor(None, _read_ahead, spec.config.models)
        await self.prepare(spec.code)
        zygote = self.revisions[spec.code.code_key]
        config = dataclasses.replace(spec.config, socket_path=self.socket_path)
        handle = ReplicaHandle(replica_id=spec.replica_id, code_key=spec.code.code_key)
        self.handles[spec.replica_id] = handle
        zygote.send([wire.FORK, spec.replica_id, dataclasses.asdict(config)])
        return handle

    async def stop(self, handle: ReplicaHandle, drain: bool, reason: str = "") -> None:
        if handle.replica_id not in self.handles:
            return
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
            zygote.connection.send([wire.KILL, handle.replica_id, reason])
        elif handle.pid is not None:
            with contextlib.suppress(ProcessLookupError):  # zygote gone: signal the orphan
                os.kill(handle.pid, 9)
            self.handles.pop(handle.replica_id, None)

    def list(self) -> list[ReplicaHandle]:
        return list(self.handles.values())

    def set_priority(self, handle: ReplicaHandle, background: bool) -> None:
        if handle.pid is None:
            return
        # Niceness is per thread on Linux: set every thread's; threads started later inherit.
        try:
            threads = [int(tid) for tid in os.listdir(f"/proc/{handle.pid}/task")]
        except OSError:
            threads = [handle.pid]
        for tid in threads:
            try:
                os.setpriority(os.PRIO_PROCESS, tid, BACKGROUND_NICE if background else 0)
            except OSError as exc:  # gone, or not allowed to raise priority back
                log.debug("cannot renice %s thread %d: %s", handle.replica_id, tid, exc)


BACKGROUND_NICE = 19  # the lowest CPU priority: a shadow's replicas run on leftover CPU
READ_AHEAD_CHUNK = 8 << 20  # the kernel acts on at most read_ahead_kb of one WILLNEED call


def _read_ahead(models: list[dict[str, Any]]) -> None:
    """Ask the kernel to pull a replica's weights into the page cache while the replica forks
    and initialises, so its first forward pass finds them read rather than faulting them in
    page by page."""
    for model in models:
        for entry in model["files"].values():
            try:
                fd = os.open(entry["path"], os.O_RDONLY)
            except OSError:
                continue  # loading will report it clearly
            try:
                size = os.fstat(fd).st_size
                for offset in range(0, size, READ_AHEAD_CHUNK):
                    os.posix_fadvise(fd, offset, READ_AHEAD_CHUNK, os.POSIX_FADV_WILLNEED)
            finally:
                os.close(fd)

