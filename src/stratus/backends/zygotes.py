"""The server's side of the zygotes of the local backend: a profile zygote (which forks revision
zygotes) and a revision zygote (which forks replicas), with what each reports back."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from stratus.backends.base import CodeSpec
from stratus.errors import DeployError, Unavailable
from stratus.runtime.connection import FramedConnection
from stratus.runtime.messages import Exited, Forked, ToRevisionZygote, ToServer

# Pool threads are created after the fork; none may exist in a zygote.
ZYGOTE_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


async def spawn_profile(socket_path: str, code: CodeSpec, log_path: Path,
                        env: dict[str, str]) -> asyncio.subprocess.Process:
    """Start the profile zygote that imports ``code``'s preloads."""
    # The child inherits the descriptor; a one-off open is not worth a thread hop.
    log_file = open(log_path, "ab")  # noqa: SIM115, ASYNC230
    try:
        # -P: the server's working directory is not for imports, nor to reach.
        return await asyncio.create_subprocess_exec(
            sys.executable, "-P", "-m", "stratus.runtime.zygote",
            "--socket", socket_path, "--profile", code.profile,
            "--preload", ",".join(sorted(code.preload)),
            stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=log_file,
            env={**env, **ZYGOTE_ENV})
    finally:
        log_file.close()


class ChildProcess(Protocol):
    """A profile zygote's process: asyncio's, or one adopted after a takeover's exec."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


class ProfileZygote:
    """Server side of a profile zygote: LOAD goes out, the FORKED of each revision zygote comes
    back. ``revisions`` is the backend's registry of revision zygotes, by code key."""

    def __init__(self, profile: str, process: ChildProcess,
                 revisions: Mapping[str, RevisionZygote]) -> None:
        self.profile = profile
        self.process = process
        self.revisions = revisions
        self.hello: asyncio.Future[FramedConnection] = asyncio.get_running_loop().create_future()
        self.connection: FramedConnection | None = None

    def on_message(self, message: ToServer) -> None:
        if isinstance(message, Forked):  # the pid of a revision zygote it just forked
            zygote = self.revisions.get(message.child)
            if zygote is not None and zygote.profile_pid == self.process.pid:
                zygote.forked(int(message.pid))

    def on_close(self) -> None:
        self.connection = None


# Told (zygote, replica id, pid) when a revision zygote reports a replica it forked.
ReplicaForked = Callable[["RevisionZygote", str, int], None]
# Told (replica id, return code, reason, out of memory, (CPU seconds, peak RSS bytes)) when a
# revision zygote reaps a replica or a job worker.
ReplicaExited = Callable[[str, int, str, bool, tuple[float, int]], None]


class RevisionZygote:
    """Server side of a revision zygote: FORK and KILL go out, FORKED and EXITED come back and
    go to the callbacks; ``on_closed`` hears that its connection ended."""

    def __init__(self, code: CodeSpec, profile_pid: int | None, *, on_replica_forked: ReplicaForked,
                 on_replica_exited: ReplicaExited,
                 on_closed: Callable[[RevisionZygote], None]) -> None:
        self.code_key = code.code_key
        self.namespace = code.namespace
        self.profile_pid = profile_pid  # its parent: only a child of it may say hello as it
        self.forked_pid: int | None = None  # as its parent reported it
        # (pid, error, trace) from a zygote whose import failed, until its pid is confirmed.
        self.import_failure: tuple[int, str, str | None] | None = None
        self.loaded: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.connection: FramedConnection | None = None
        self.pid: int | None = None
        self._on_replica_forked = on_replica_forked
        self._on_replica_exited = on_replica_exited
        self._on_closed = on_closed

    def forked(self, pid: int) -> None:
        """Its parent reported forking it as ``pid``: that confirms an import failure which a
        hello from that pid reported first."""
        self.forked_pid = pid
        failure = self.import_failure
        if failure is not None and failure[0] == pid:
            self.fail(failure[1], failure[2])

    def on_message(self, message: ToServer) -> None:
        if isinstance(message, Forked):
            self._on_replica_forked(self, message.child, message.pid)
        elif isinstance(message, Exited):
            self._on_replica_exited(message.replica_id, int(message.returncode),
                                    str(message.reason), bool(message.out_of_memory),
                                    (float(message.cpu_s), int(message.peak_rss)))

    def on_close(self) -> None:
        self.connection = None
        if not self.loaded.done():
            self.loaded.set_exception(DeployError("the zygote importing this code died"))
        self._on_closed(self)

    def fail(self, error: str, trace: str | None) -> None:
        if not self.loaded.done():
            self.loaded.set_exception(DeployError(error, detail=trace))

    def send(self, message: ToRevisionZygote) -> None:
        if self.connection is None:
            raise Unavailable("the zygote for this revision is gone")
        self.connection.send(message)
