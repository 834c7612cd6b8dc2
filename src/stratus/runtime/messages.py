"""The messages between the server, zygotes, replicas and job workers: each type's code and its
fields in wire order, as a named tuple that msgpack packs as the frame's array (runtime/wire.py
frames it), and the ReplicaConfig and JobConfig that a FORK and a FORK_JOB carry.

Readers turn a decoded frame into its typed message with ``parse`` and the table of the types
they read; senders build the same tuples, so the bytes on the wire are what a list would make.
Field types say what the sender puts there: on arrival only the number of fields is checked
(readers convert where a wrong type would do harm), so a message costs little more than a tuple.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeAlias, TypeVar

# -- process identification: the first frame on every connection to the server ---------------
HELLO_PROFILE = 1
HELLO_REVISION = 2
HELLO_REPLICA = 3
HELLO_JOB = 4


class HelloProfile(NamedTuple):
    type: int
    profile_key: str
    pid: int
    preload_errors: dict[str, str]  # module -> why it failed to import; the zygote serves anyway


class HelloRevision(NamedTuple):
    type: int
    code_key: str
    pid: int
    ok: bool
    meta_or_error: Any  # the handler's description (a map) if ok, else why the import failed
    traceback: str | None


class HelloReplica(NamedTuple):
    type: int
    replica_id: str
    pid: int
    ok: bool
    init_ms_or_error: float | str  # how long the user's init took, or how it failed
    traceback: str | None


class HelloJob(NamedTuple):
    type: int
    worker_id: str
    pid: int


# -- server -> profile zygote -------------------------------------------------------------------
LOAD = 10


class Load(NamedTuple):
    type: int
    code_key: str
    load_spec: dict[str, Any]  # bundle_dir, entrypoint, env, sandbox


# -- server -> revision zygote, and the zygotes' reports ----------------------------------------
FORK = 20
KILL = 21
FORKED = 22
EXITED = 23
SHUTDOWN = 24
FORK_JOB = 25


@dataclass(frozen=True)
class ReplicaConfig:
    """Everything a replica needs, sent by the server in the FORK message."""

    replica_id: str
    socket_path: str
    namespace: str
    deployment: str
    revision: int
    max_concurrency: int
    timeout_s: float
    memory_mb: int | None
    threads: int
    log_path: str
    heartbeat_s: float = 1.0
    config: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)  # resolved, with blob paths
    # The values of the revision's secrets, read as the replica starts; set in its environment
    # only (the zygote it forks from never holds them) and kept out of any repr.
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    sandbox: dict[str, Any] = field(default_factory=dict)  # a ReplicaSandbox, on the wire

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> ReplicaConfig:
        return cls(**data)


class Fork(NamedTuple):
    type: int
    replica_id: str
    replica_config: dict[str, Any]  # a ReplicaConfig, as dataclasses.asdict makes it


@dataclass(frozen=True)
class JobConfig:
    """Everything a job worker needs, sent by the server in the FORK_JOB message. A job runs
    ``world_size`` workers (1 for now), each told its ``rank``."""

    worker_id: str
    job_id: str
    socket_path: str
    namespace: str
    log_path: str
    params: dict[str, Any] = field(default_factory=dict)
    # Each dataset the job declared, by the reference it was given as: its resolved layout.
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    memory_mb: int | None = None
    threads: int = 1
    rank: int = 0
    world_size: int = 1
    attempt: int = 1
    env: dict[str, str] = field(default_factory=dict)
    sandbox: dict[str, Any] = field(default_factory=dict)  # a ReplicaSandbox, on the wire
    # Registry versions the job may load (ctx.load_model), laid out as replicas get them.
    models: list[dict[str, Any]] = field(default_factory=list)
    # After train(ctx) returns: evaluate the model it saved on {"dataset", "split"}.
    evaluate: dict[str, Any] | None = None

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> JobConfig:
        return cls(**data)


class ForkJob(NamedTuple):
    """Fork a job worker rather than a replica: it runs ``train(ctx)`` once, then ends."""

    type: int
    worker_id: str
    job_config: dict[str, Any]  # a JobConfig, as dataclasses.asdict makes it


class Kill(NamedTuple):
    type: int
    replica_id: str
    reason: str


class Forked(NamedTuple):
    type: int
    child: str  # a revision zygote's replica id, or a profile zygote's code key
    pid: int


class Exited(NamedTuple):
    type: int
    replica_id: str
    pid: int
    returncode: int
    reason: str
    out_of_memory: bool = False  # a zygote that predates it leaves it out
    cpu_s: float = 0.0  # user + system CPU seconds of the process and its reaped children
    peak_rss: int = 0  # bytes, the largest resident set it reached


class Shutdown(NamedTuple):
    type: int


# -- server <-> replica data path ---------------------------------------------------------------
REQUEST = 30
RESPONSE = 31
ERROR = 32
CANCEL = 33
HEARTBEAT = 34
STOP = 35
CHUNK = 36
SPANS = 37


class Request(NamedTuple):
    type: int
    rid: int
    kind: int  # wire.KIND_*, as for every payload
    payload: Any
    meta: dict[str, Any]  # request_id, timeout, traceparent


class Response(NamedTuple):
    type: int
    rid: int
    status: int  # 0 = ok
    kind: int
    payload: Any


class Error(NamedTuple):
    type: int
    rid: int
    status: int
    error_type: str
    message: str
    traceback: str | None


class Cancel(NamedTuple):
    type: int
    rid: int


class Heartbeat(NamedTuple):
    type: int
    inflight: int
    rss: int
    pss: int
    charged: int  # bytes
    # Optional, each key too: {"stats": {name: value}, "batch_sizes": {method: {batch size:
    # batches run since the last heartbeat}}, "peak_rss": bytes, "pss_shmem": bytes of the PSS
    # in shared memory}; an older replica leaves it out.
    reports: dict[str, Any] | None = None


class Stop(NamedTuple):
    type: int
    drain_timeout_s: float


class Chunk(NamedTuple):
    """One item of a streamed answer; the RESPONSE or ERROR of its rid ends the stream. Of kind
    ``KIND_STARTED`` it is the ack of a request that asked for one (``meta["ack"]``)."""

    type: int
    rid: int
    kind: int
    payload: Any


class Spans(NamedTuple):
    """Spans the replica finished (telemetry/spans.py records), sent before the answer they
    belong to."""

    type: int
    records: list[Any]


# -- job worker <-> server ----------------------------------------------------------------------
JOB_EVENT = 40
JOB_CALL = 41
JOB_REPLY = 42
JOB_DONE = 43


class JobEventFrame(NamedTuple):
    """An event the job's code recorded (params, a metric, an epoch): appended in order."""

    type: int
    kind: str  # the event type: ParamsLogged, MetricLogged, EpochCompleted
    data: dict[str, Any]


class JobCall(NamedTuple):
    """A request the job waits for: store a checkpoint or a model, fetch the last checkpoint."""

    type: int
    call_id: int
    op: str
    payload: dict[str, Any]


class JobReply(NamedTuple):
    type: int
    call_id: int
    ok: bool
    payload: Any  # the answer, or why the call failed (a string)


class JobDone(NamedTuple):
    """``train(ctx)`` returned (ok) or raised: the worker exits right after."""

    type: int
    ok: bool
    error: str  # "Type: message" when it raised
    reason: str  # "" | "error" | "out_of_memory"


# -- what each side reads -----------------------------------------------------------------------
ToServer: TypeAlias = (HelloProfile | HelloRevision | HelloReplica | HelloJob | Forked | Exited
                       | Response | Error | Chunk | Heartbeat | Spans | JobEventFrame | JobCall
                       | JobDone)
ToRevisionZygote: TypeAlias = Fork | ForkJob | Kill | Shutdown
ToReplica: TypeAlias = Request | Cancel | Stop
Answer: TypeAlias = Response | Error  # how a request ends


def _exited(frame: list[Any]) -> Exited:
    return Exited(*frame)  # not _make: a frame without the optional field gets its default


def _heartbeat(frame: list[Any]) -> Heartbeat:
    return Heartbeat(*frame)


# ``_make`` builds a tuple from the decoded list without unpacking it into arguments: the
# cheapest construction, and it rejects a frame with the wrong number of fields.
TO_SERVER: dict[int, Callable[[list[Any]], ToServer]] = {
    HELLO_PROFILE: HelloProfile._make, HELLO_REVISION: HelloRevision._make,
    HELLO_REPLICA: HelloReplica._make, HELLO_JOB: HelloJob._make, FORKED: Forked._make,
    EXITED: _exited, RESPONSE: Response._make, ERROR: Error._make, CHUNK: Chunk._make,
    HEARTBEAT: _heartbeat, SPANS: Spans._make, JOB_EVENT: JobEventFrame._make,
    JOB_CALL: JobCall._make, JOB_DONE: JobDone._make,
}
TO_PROFILE_ZYGOTE: dict[int, Callable[[list[Any]], Load]] = {LOAD: Load._make}
TO_REVISION_ZYGOTE: dict[int, Callable[[list[Any]], ToRevisionZygote]] = {
    FORK: Fork._make, FORK_JOB: ForkJob._make, KILL: Kill._make, SHUTDOWN: Shutdown._make,
}
TO_REPLICA: dict[int, Callable[[list[Any]], ToReplica]] = {
    REQUEST: Request._make, CANCEL: Cancel._make, STOP: Stop._make,
}
TO_JOB: dict[int, Callable[[list[Any]], JobReply]] = {JOB_REPLY: JobReply._make}

M = TypeVar("M")


def parse(frame: list[Any], types: Mapping[int, Callable[[list[Any]], M]]) -> M | None:
    """The typed message of a decoded frame, or None when its type is not in ``types``: readers
    ignore such frames (and the server hangs up on one that comes first, in place of a hello).
    A frame of a known type with the wrong number of fields is malformed: ValueError, as for a
    frame that does not decode."""
    try:
        make = types.get(frame[0])
    except TypeError:  # an unhashable first element names no type
        return None
    if make is None:
        return None
    try:
        return make(frame)
    except TypeError:
        raise ValueError(f"a frame of type {frame[0]} with {len(frame)} fields") from None
