"""The local backend's side of a takeover: what one server hands the next (its zygotes' and
replicas' connections as descriptors that survive ``exec``, their pids, what each has said),
and the children the next one adopts instead of starting them again."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from stratus.backends.base import CodeSpec, HandleState, ReplicaHandle
from stratus.backends.isolation import Isolation
from stratus.backends.zygotes import ProfileZygote, RevisionZygote
from stratus.dispatch.channel import ReplicaChannel
from stratus.runtime.connection import Endpoint, FramedConnection

SETTLE_S = 1.0  # the longest wait for a connection's queued frames to leave before the exec


@dataclass
class HandedConnection:
    """A connection's descriptor (open across the exec) and the bytes of a frame it had begun."""

    fd: int
    pending: str = ""  # base64

    @classmethod
    def of(cls, connection: FramedConnection) -> HandedConnection:
        fd, pending = connection.detach()
        return cls(fd, base64.b64encode(pending).decode())

    def pending_bytes(self) -> bytes:
        return base64.b64decode(self.pending)


@dataclass
class HandedProfile:
    profile: str
    pid: int
    connection: HandedConnection


@dataclass
class HandedRevision:
    code_key: str
    namespace: str
    pid: int
    profile_pid: int | None
    meta: dict[str, Any]
    connection: HandedConnection


@dataclass
class HandedReplica:
    replica_id: str
    code_key: str
    namespace: str
    deployment: str
    revision: int
    pid: int
    connection: HandedConnection
    sandbox: dict[str, Any] = field(default_factory=dict)  # the isolation's record of it


@dataclass
class BackendHandover:
    profiles: list[HandedProfile] = field(default_factory=list)
    revisions: list[HandedRevision] = field(default_factory=list)
    replicas: list[HandedReplica] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BackendHandover:
        def handed(item: dict[str, Any]) -> dict[str, Any]:
            return {**item, "connection": HandedConnection(**item["connection"])}

        return cls([HandedProfile(**handed(p)) for p in data.get("profiles", [])],
                   [HandedRevision(**handed(r)) for r in data.get("revisions", [])],
                   [HandedReplica(**handed(r)) for r in data.get("replicas", [])])

    def descriptors(self) -> list[int]:
        return [item.connection.fd for group in (self.profiles, self.revisions, self.replicas)
                for item in group]


async def settle(connections: list[FramedConnection]) -> None:
    """Wait until what each connection queued has left the process: an exec loses what a
    transport still buffers."""
    deadline = asyncio.get_running_loop().time() + SETTLE_S
    while asyncio.get_running_loop().time() < deadline:
        if all(c.transport is None or c.transport.get_write_buffer_size() == 0
               for c in connections):
            return
        await asyncio.sleep(0.005)


class AdoptedProcess:
    """A child this process had before its exec (a profile zygote), watched through a pidfd:
    what the backend asks of an ``asyncio.subprocess.Process``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = self._loop.create_future()
        try:
            self._fd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:
            self._fd = None
            self._reap()
            return
        self._loop.add_reader(self._fd, self._reap)

    def _reap(self) -> None:
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
        status = 0
        with contextlib.suppress(ChildProcessError):  # reaped already, or never ours
            _, status = os.waitpid(self.pid, 0)
        self.returncode = os.waitstatus_to_exitcode(status)
        if not self._exited.done():
            self._exited.set_result(self.returncode)

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Handing(Protocol):
    """The local backend, as a takeover reads and rebuilds it."""

    profiles: dict[str, ProfileZygote]
    revisions: dict[str, RevisionZygote]
    handles: dict[str, ReplicaHandle]
    isolation: Isolation

    def replica_forked(self, zygote: RevisionZygote, replica_id: str, pid: int) -> None: ...

    def on_exited(self, replica_id: str, returncode: int, reason: str,
                  out_of_memory: bool = False, usage: tuple[float, int] = (0.0, 0)) -> None: ...

    def revision_closed(self, zygote: RevisionZygote) -> None: ...

    def channel_lost(self, channel: ReplicaChannel) -> None: ...


async def hand_over_children(backend: Handing,
                             kill: Callable[[ReplicaHandle, str], None]) -> BackendHandover:
    """Detach every zygote's and serving replica's connection for the next server; a replica
    still starting or stopping is killed (its zygote's report would reach no one)."""
    replicas = [h for h in backend.handles.values() if h.state is HandleState.RUNNING
                and h.channel is not None and not h.channel.closed and h.pid is not None]
    for handle in [h for h in backend.handles.values() if h not in replicas]:
        kill(handle, "the server is being replaced")
    revisions = [z for z in backend.revisions.values() if z.connection is not None
                 and z.pid is not None and z.loaded.done() and not z.loaded.cancelled()
                 and z.loaded.exception() is None]
    profiles = [p for p in backend.profiles.values()
                if p.connection is not None and p.process.returncode is None]
    await settle([c for c in [*(p.connection for p in profiles), *(z.connection for z in revisions),
                              *(h.channel.connection for h in replicas if h.channel)] if c])
    state = BackendHandover()
    for handle in replicas:
        assert handle.channel is not None and handle.pid is not None
        state.replicas.append(HandedReplica(
            handle.replica_id, handle.code_key, handle.namespace, handle.deployment,
            handle.revision, handle.pid, HandedConnection.of(handle.channel.connection),
            backend.isolation.export(handle.replica_id)))
    for zygote in revisions:
        assert zygote.connection is not None and zygote.pid is not None
        state.revisions.append(HandedRevision(
            zygote.code_key, zygote.namespace, zygote.pid, zygote.profile_pid,
            zygote.loaded.result(), HandedConnection.of(zygote.connection)))
    for profile in profiles:
        assert profile.connection is not None
        state.profiles.append(HandedProfile(profile.profile, profile.process.pid,
                                            HandedConnection.of(profile.connection)))
    return state


async def adopt(backend: Handing, state: BackendHandover) -> list[ReplicaHandle]:
    """Rebuild the backend's view of what the server before the exec handed over: its
    replicas first, so that a zygote's report on one finds it."""
    adopted = []
    for replica in state.replicas:
        handle = ReplicaHandle(replica.replica_id, replica.code_key, replica.pid,
                               HandleState.RUNNING, namespace=replica.namespace,
                               deployment=replica.deployment, revision=replica.revision)

        def channel(connection: FramedConnection, handle: ReplicaHandle = handle) -> Endpoint:
            handle.channel = ReplicaChannel(handle.replica_id, handle.pid or 0, connection)
            handle.channel.on_lost = backend.channel_lost
            return handle.channel

        backend.handles[replica.replica_id] = handle
        backend.isolation.adopt(replica.replica_id, replica.sandbox)
        await _attach(channel, replica.connection)
        adopted.append(handle)
    for revision in state.revisions:
        zygote = RevisionZygote(
            CodeSpec(revision.code_key, "", "", namespace=revision.namespace),
            revision.profile_pid, on_replica_forked=backend.replica_forked,
            on_replica_exited=backend.on_exited, on_closed=backend.revision_closed)
        zygote.pid = zygote.forked_pid = revision.pid
        zygote.loaded.set_result(revision.meta)
        backend.revisions[revision.code_key] = zygote
        zygote.connection = await _attach(_always(zygote), revision.connection)
    for item in state.profiles:
        profile = ProfileZygote(item.profile, AdoptedProcess(item.pid), backend.revisions)
        backend.profiles[item.profile] = profile
        profile.connection = await _attach(_always(profile), item.connection)
        profile.hello.set_result(profile.connection)
    return adopted


async def _attach(endpoint: Callable[[FramedConnection], Endpoint],
                  handed: HandedConnection) -> FramedConnection:
    return await FramedConnection.adopt(endpoint, handed.fd, handed.pending_bytes())


def _always(endpoint: Endpoint) -> Callable[[FramedConnection], Endpoint]:
    return lambda _: endpoint
