"""The backend interface: where replicas run (``start(spec) -> handle``, ``stop``, ``list``), and
job workers (``start_worker(spec, sink) -> handle``, ``stop_worker``)."""

from __future__ import annotations

import builtins
import enum
from dataclasses import dataclass, field
from typing import Any, Protocol

from stratus.dispatch.channel import ReplicaChannel
from stratus.runtime.messages import JobCall, JobConfig, JobDone, JobEventFrame, ReplicaConfig


@dataclass(frozen=True)
class CodeSpec:
    """What a zygote imports: one code bundle with its entrypoint, preloads and env."""

    code_key: str
    bundle_dir: str
    entrypoint: str
    preload: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    # Zygotes are per namespace: one imports the code as that namespace's user.
    namespace: str = "default"
    kind: str = "serve"  # or "job": the zygote validates a job function and forks job workers

    @property
    def profile(self) -> str:
        return "+".join(sorted(self.preload)) or "default"


@dataclass(frozen=True)
class ReplicaSpec:
    replica_id: str
    code: CodeSpec
    config: ReplicaConfig


class HandleState(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    EXITED = "exited"


@dataclass
class ReplicaHandle:
    replica_id: str
    code_key: str
    pid: int | None = None
    state: HandleState = HandleState.STARTING
    channel: ReplicaChannel | None = None
    namespace: str = ""
    deployment: str = ""
    revision: int = 0
    # (pid, error, trace) from a replica whose init failed, until its pid is confirmed.
    init_failure: tuple[int, str, str | None] | None = None


@dataclass(frozen=True)
class WorkerSpec:
    """One worker of a job: the code its zygote imports and what the worker is told."""

    worker_id: str
    code: CodeSpec
    config: JobConfig


@dataclass(frozen=True)
class WorkerExit:
    """How a job worker ended, as its zygote (and its cgroup) saw it."""

    returncode: int  # negative: the signal that killed it
    reason: str  # why the sandbox or the server killed it, if one did
    out_of_memory: bool
    cpu_s: float = 0.0  # user + system, with the processes it started and waited for
    peak_rss: int = 0  # bytes


class WorkerHandle(Protocol):
    """The server's side of a running job worker."""

    worker_id: str
    pid: int | None

    def reply(self, call_id: int, ok: bool, payload: object) -> None:
        """Answer one of the worker's calls."""
        ...

    def hold(self, paused: bool) -> None:
        """Stop (or resume) reading the worker's frames: backpressure while its events wait."""
        ...


class WorkerSink(Protocol):
    """What a backend tells the job runner about one worker, in order: forked, its messages,
    then exited (once its last frame has been read)."""

    def worker_forked(self, handle: WorkerHandle, pid: int) -> None: ...

    def worker_message(self, handle: WorkerHandle,
                       message: JobEventFrame | JobCall | JobDone) -> None: ...

    def worker_exited(self, handle: WorkerHandle, ending: WorkerExit) -> None: ...


class ReplicaEvents(Protocol):
    """What a backend tells the controller about the replicas it runs."""

    def replica_ready(self, replica_id: str, channel: ReplicaChannel, init_ms: float) -> None: ...

    def replica_failed(self, replica_id: str, error: str, detail: str | None) -> None: ...

    def replica_lost(self, replica_id: str) -> None: ...

    def replica_exited(self, namespace: str, deployment: str, replica_id: str, reason: str,
                       out_of_memory: bool) -> None:
        """A replica ended other than by being stopped: a crash, a kill, its memory limit."""
        ...


class Backend(Protocol):
    async def open(self, events: ReplicaEvents) -> None: ...

    async def prepare(self, code: CodeSpec) -> dict[str, Any]:
        """Import and validate the code where replicas will fork from; return its metadata."""
        ...

    async def start(self, spec: ReplicaSpec) -> ReplicaHandle: ...

    async def stop(self, handle: ReplicaHandle, drain: bool, reason: str = "") -> None: ...

    def list(self) -> list[ReplicaHandle]: ...

    def set_priority(self, handle: ReplicaHandle, background: bool) -> None:
        """Run a replica in the background (a shadow's), so it never takes CPU from the
        replicas whose answers clients wait for; or in the foreground again."""
        ...

    async def start_worker(self, spec: WorkerSpec, sink: WorkerSink) -> WorkerHandle:
        """Fork a job worker from a zygote that imported the job's code (DeployError when it
        does not import or is not a job function)."""
        ...

    def stop_worker(self, handle: WorkerHandle, reason: str) -> None:
        """Kill the worker and everything it started; its exit is reported as usual."""
        ...

    async def release(self, code_key: str) -> None:
        """The code is no longer needed: free what ``prepare`` holds."""
        ...

    def adoptable(self, namespace: str, deployment: str,
                  revision: int) -> builtins.list[ReplicaHandle]:
        """The running replicas of a revision that the server before a takeover handed on
        (each once): the restored revision's pool takes them as they are, already ready."""
        ...

    def unclaimed(self) -> builtins.list[ReplicaHandle]:
        """The handed-on replicas no restored revision took (``adoptable``), now released."""
        ...

    async def close(self, hand_over: bool = False) -> None:
        """Stop every replica, or with ``hand_over`` leave them running for the next server
        of a takeover."""
        ...
