"""The server's side of the zygotes of the local backend: a profile zygote (which forks revision
zygotes) and a revision zygote (which forks replicas), with what each reports back."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from stratus.backends.base import CodeSpec
from stratus.errors import DeployError, Unavailable
from stratus.runtime import wire
from stratus.runtime.connection import FramedConnection

if TYPE_CHECKING:
    from stratus.backends.local import LocalBackend


class ProfileZygote:
    def __init__(self, backend: LocalBackend, profile: str,
                 process: asyncio.subprocess.Process) -> None:
        self.backend = backend
        self.profile = profile
        self.process = process
        self.hello: asyncio.Future[FramedConnection] = asyncio.get_running_loop().create_future()
        self.connection: FramedConnection | None = None

    def on_message(self, message: list[Any]) -> None:
        if message[0] == wire.FORKED:  # the pid of a revision zygote it just forked
            zygote = self.backend.revisions.get(message[1])
            if zygote is not None and zygote.profile_pid == self.process.pid:
                zygote.forked_pid = int(message[2])
                failure = zygote.import_failure
                if failure is not None and failure[0] == zygote.forked_pid:
                    zygote.fail(failure[1], failure[2])

    def on_close(self) -> None:
        self.connection = None


class RevisionZygote:
    """Server side of a revision zygote: FORK and KILL go out, FORKED and EXITED come back."""

    def __init__(self, backend: LocalBackend, code: CodeSpec, profile_pid: int | None) -> None:
        self.backend = backend
        self.code_key = code.code_key
        self.namespace = code.namespace
        self.profile_pid = profile_pid  # its parent: only a child of it may say hello as it
        self.forked_pid: int | None = None  # as its parent reported it
        # (pid, error, trace) from a zygote whose import failed, until its pid is confirmed.
        self.import_failure: tuple[int, str, str | None] | None = None
        self.loaded: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.connection: FramedConnection | None = None
        self.pid: int | None = None

    def on_message(self, message: list[Any]) -> None:
        kind = message[0]
        if kind == wire.FORKED:
            handle = self.backend.handles.get(message[1])
            if handle is not None and handle.code_key == self.code_key:
                handle.pid = int(message[2])
                self.backend.isolation.forked(handle.replica_id, handle.pid, self.pid)
        elif kind == wire.EXITED:
            out_of_memory = bool(message[5]) if len(message) > 5 else False
            self.backend.on_exited(message[1], int(message[3]), str(message[4]), out_of_memory)

    def on_close(self) -> None:
        self.connection = None
        if not self.loaded.done():
            self.loaded.set_exception(DeployError("the zygote importing this code died"))
        if self.backend.revisions.get(self.code_key) is self:
            del self.backend.revisions[self.code_key]

    def fail(self, error: str, trace: str | None) -> None:
        if not self.loaded.done():
            self.loaded.set_exception(DeployError(error, detail=trace))

    def send(self, message: list[Any]) -> None:
        if self.connection is None:
            raise Unavailable("the zygote for this revision is gone")
        self.connection.send(message)
