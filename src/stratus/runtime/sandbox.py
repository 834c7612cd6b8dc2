"""The replica sandbox: the limits, identity and environment of zygotes and replicas as plain
data (built by the server), and the calls that impose them inside a freshly forked process.

Memory is capped by a per-replica cgroup when the host lets the server make one (see
``runtime/cgroups.py``), else by ``RLIMIT_AS``; CPU seconds, open files and core dumps by
rlimits; processes by the cgroup's ``pids.max``, else, for replicas that run as their
namespace's own user, by ``RLIMIT_NPROC``.
"""

from __future__ import annotations

import os
import re
import resource
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from stratus.runtime.cgroups import current_cgroups
from stratus.runtime.reach import Need, load_libc, private_view, python_needs, unreachable

MB = 1 << 20
# RLIMIT_AS counts address space reserved, not used: each thread reserves its stack (8 MiB)
# and may reserve a malloc arena (64 MiB; glibc makes at most 8 per core).
THREAD_STACK = 8 * MB
MALLOC_ARENA = 64 * MB
ADDRESS_SLACK = 256 * MB  # the runtime's own threads, small mappings, fragmentation
PLACEMENT_TIMEOUT_S = 5.0
CPU_GRACE_S = 5  # SIGXCPU at the soft limit, SIGKILL this much later

# All a zygote or replica keeps of the server's environment, besides ``pass_env``: never
# the server's secrets (STRATUS_ADMIN_KEY, STRATUS_MASTER_KEY, database URLs).
BASE_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONPATH", "VIRTUAL_ENV",
            "SSL_CERT_FILE", "SSL_CERT_DIR")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_PR_SET_DUMPABLE = 4
_PR_SET_NO_NEW_PRIVS = 38


class SandboxError(Exception):
    """A process could not take on its sandbox; it must not run user code then."""


class SandboxConfig(BaseModel):
    """The ``sandbox:`` section of the server's config file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cgroups: bool = True  # per-replica cgroups where the host allows them; false: rlimits only
    memory_headroom_mb: int = Field(default=64, ge=0)  # hard cgroup limit = memory_mb + this
    pids: int = Field(default=512, ge=16)  # processes and threads of a replica (pids.max)
    nofile: int = Field(default=1024, ge=64, le=1 << 20)
    cpu_seconds: int = Field(default=0, ge=0)  # CPU time of a replica's life; 0: unlimited
    nproc: int = Field(default=4096, ge=64)  # per namespace user, without a pids cgroup
    # namespace: each namespace's own user (the server must run as root); shared: one
    # unprivileged user for all namespaces; auto: namespace when the server runs as root,
    # else the server's user; server: always the server's user (as root: root replicas).
    run_as: Literal["auto", "namespace", "shared", "server"] = "auto"
    uid_base: int = Field(default=200000, ge=1000, le=(1 << 31) - 1)
    uid_count: int = Field(default=65536, ge=1, le=1 << 24)
    shared_uid: int = Field(default=199998, ge=1000, le=(1 << 31) - 1)  # run_as: shared
    # The one group every replica user is in (search rights on what replicas must reach).
    group_id: int = Field(default=199999, ge=1000, le=(1 << 31) - 1)
    pass_env: tuple[str, ...] = ()

    @field_validator("pass_env")
    @classmethod
    def _env_names(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            if not _ENV_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not an environment variable name")
            if name.upper().startswith("STRATUS_"):
                raise ValueError(f"{name}: the server's STRATUS_* variables never reach replicas")
        return names

    def uid_range(self) -> range:
        return range(self.uid_base, self.uid_base + self.uid_count)


def sandbox_config(section: Mapping[str, Any]) -> SandboxConfig:
    """Validate the config file's ``sandbox`` section; ValueError names what is wrong."""
    try:
        config = SandboxConfig.model_validate(dict(section))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'sandbox'}: {e['msg']}"
                             for e in exc.errors())
        raise ValueError(f"sandbox: {problems}") from None
    if config.group_id in config.uid_range():
        raise ValueError("sandbox: group_id must lie outside uid_base .. uid_base + uid_count")
    if config.shared_uid in config.uid_range() or config.shared_uid == config.group_id:
        raise ValueError("sandbox: shared_uid must lie outside uid_base .. uid_base + uid_count "
                         "and differ from group_id")
    return config


# -- identity -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Identity:
    """The user a namespace's zygotes and replicas run as."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()


def assign_uid(table: Mapping[str, int], namespace: str, uids: range) -> int:
    """The namespace's uid: the one it has, else the lowest one no namespace has."""
    if namespace in table:
        return table[namespace]
    taken = set(table.values())
    for uid in uids:
        if uid not in taken:
            return uid
    raise SandboxError(f"no free uid left in {uids.start}..{uids.stop - 1} for namespace "
                       f"{namespace!r}; raise sandbox.uid_count")


# -- environment ----------------------------------------------------------------------------
def base_env(server_env: Mapping[str, str], pass_env: tuple[str, ...] = ()) -> dict[str, str]:
    """What every zygote and replica starts from: a few neutral variables of the server's."""
    env = {name: server_env[name] for name in (*BASE_ENV, *pass_env) if name in server_env}
    env.setdefault("PATH", DEFAULT_PATH)
    return env


def home_env(base: Mapping[str, str], home: str, user: str) -> dict[str, str]:
    """The base with a private home that is also the temporary directory."""
    return {**base, "HOME": home, "TMPDIR": home, "USER": user, "LOGNAME": user}


def compose_env(base: Mapping[str, str], env: Mapping[str, str],
                secrets: Mapping[str, str]) -> dict[str, str]:
    """The one place a replica's environment is put together: the sandbox's base, then the
    deployment's ``env``, then the values of its secrets."""
    return {**base, **env, **secrets}


# -- limits ---------------------------------------------------------------------------------
def cgroup_memory_bytes(memory_mb: int | None, headroom_mb: int) -> int | None:
    """The hard limit a replica's cgroup gets. ``memory_mb`` itself caps the replica's own
    pages (the zygote's watchdog); the headroom covers what a cgroup charges besides them
    (page cache it reads, kernel memory)."""
    return (memory_mb + headroom_mb) * MB if memory_mb else None


def address_space_budget(memory_mb: int | None, model_bytes: int, threads: int) -> int:
    """How much address space a replica may map beyond what it has when forked, under
    ``RLIMIT_AS``: its memory, its memory-mapped weights, and what its threads reserve."""
    if not memory_mb:
        return 0
    arenas = min(threads, 8 * (os.cpu_count() or 1))
    return memory_mb * MB + model_bytes + threads * THREAD_STACK + arenas * MALLOC_ARENA \
        + ADDRESS_SLACK


def replica_rlimits(config: SandboxConfig, own_user: bool,
                    pids_cgroup: bool) -> dict[str, tuple[int, int]]:
    """The rlimits of one replica. ``RLIMIT_NPROC`` counts every process of the user, so it
    is set only for a namespace's own user and only when no pids cgroup does the job."""
    limits = {"CORE": (0, 0), "NOFILE": (config.nofile, config.nofile)}
    if config.cpu_seconds:
        limits["CPU"] = (config.cpu_seconds, config.cpu_seconds + CPU_GRACE_S)
    if own_user and not pids_cgroup:
        limits["NPROC"] = (config.nproc, config.nproc)
    return limits


@dataclass(frozen=True)
class ZygoteSandbox:
    """What a revision zygote takes on before it imports user code."""

    env: dict[str, str]
    identity: Identity | None = None
    rlimits: dict[str, tuple[int, int]] = field(default_factory=dict)
    reach: tuple[str, ...] = ()  # the server's trees its processes must be able to search

    def to_wire(self) -> dict[str, Any]:
        identity = self.identity
        return {"env": self.env, "rlimits": {k: list(v) for k, v in self.rlimits.items()},
                "identity": [identity.uid, identity.gid, list(identity.groups)] if identity
                else None, "reach": list(self.reach)}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> ZygoteSandbox:
        raw = data.get("identity")
        identity = Identity(int(raw[0]), int(raw[1]), tuple(raw[2])) if raw else None
        return cls(dict(data["env"]), identity, _rlimits(data.get("rlimits")),
                   tuple(data.get("reach") or ()))


@dataclass(frozen=True)
class ReplicaSandbox:
    """What one replica takes on after its fork, before it runs the user's init."""

    workdir: str
    env: dict[str, str]  # the base, with HOME; the deployment's env and secrets go on top
    rlimits: dict[str, tuple[int, int]] = field(default_factory=dict)
    address_space: int = 0  # bytes beyond its mappings at fork (RLIMIT_AS); 0: none
    cgroups: tuple[str, ...] = ()  # "controllers:path" lines of /proc/self/cgroup to wait for
    memory_mb: int | None = None  # for the messages only

    def to_wire(self) -> dict[str, Any]:
        return {"workdir": self.workdir, "env": self.env,
                "rlimits": {k: list(v) for k, v in self.rlimits.items()},
                "address_space": self.address_space, "cgroups": list(self.cgroups),
                "memory_mb": self.memory_mb}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> ReplicaSandbox:
        return cls(str(data["workdir"]), dict(data["env"]), _rlimits(data.get("rlimits")),
                   int(data.get("address_space") or 0), tuple(data.get("cgroups") or ()),
                   data.get("memory_mb"))


def _rlimits(raw: Mapping[str, Any] | None) -> dict[str, tuple[int, int]]:
    return {str(name): (int(pair[0]), int(pair[1])) for name, pair in (raw or {}).items()}


# -- in the child ---------------------------------------------------------------------------
def enter_zygote(sandbox: ZygoteSandbox) -> None:
    """In a new revision zygote: the environment, the limits, then the namespace's user, in a
    private view of the file system when the host keeps Python out of that user's reach."""
    os.environ.clear()
    os.environ.update(sandbox.env)
    os.umask(0o077)
    _set_rlimits(sandbox.rlimits)
    if sandbox.identity is not None:
        needs = [*python_needs(), *(Need(path, False) for path in sandbox.reach)]
        become(sandbox.identity, needs)


def become(identity: Identity, needs: list[Need], parents_only: bool = False) -> None:
    """Drop to ``identity`` for good, first showing it ``needs`` in a mount namespace of this
    process's own if they are out of its reach on the host; SandboxError if they still are."""
    try:
        private_view(needs, identity.uid, frozenset((identity.gid, *identity.groups)))
    except OSError as exc:
        raise SandboxError(f"no mount namespace can show it to them ({exc.strerror})") from None
    drop_privileges(identity)
    problem = unreachable(needs, parents_only)
    if problem:
        raise SandboxError(problem)


def enter_replica(sandbox: ReplicaSandbox, env: Mapping[str, str],
                  secrets: Mapping[str, str]) -> None:
    """In a new replica: wait until the server has moved it into its cgroup, then its own
    directory, environment and limits. Runs before any user code (the init)."""
    if sandbox.cgroups:
        _wait_for_placement(sandbox.cgroups)
    os.chdir(sandbox.workdir)
    os.environ.clear()
    os.environ.update(compose_env(sandbox.env, env, secrets))
    os.umask(0o077)
    _set_rlimits(sandbox.rlimits)
    if sandbox.address_space:
        limit = _mapped_bytes() + sandbox.address_space
        _set_rlimits({"AS": (limit, limit)})


def drop_privileges(identity: Identity) -> None:
    """Become ``identity`` for good. The process stays dumpable, so its parent zygote (the
    same user) can still read its memory use in /proc; no_new_privs keeps setuid programs
    it may run from raising it again."""
    try:
        os.setgroups(list(identity.groups))
        os.setgid(identity.gid)
        os.setuid(identity.uid)
    except OSError as exc:
        raise SandboxError(f"cannot switch to uid {identity.uid}: {exc}") from None
    if os.getuid() != identity.uid or os.geteuid() != identity.uid:
        raise SandboxError(f"still running as uid {os.geteuid()} after switching users")
    libc = load_libc()
    libc.prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)
    libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


def _set_rlimits(limits: Mapping[str, tuple[int, int]]) -> None:
    for name, (soft, hard) in limits.items():
        which = getattr(resource, f"RLIMIT_{name}")
        _, current_hard = resource.getrlimit(which)
        if current_hard != resource.RLIM_INFINITY:  # only ever lower a limit
            hard = min(hard, current_hard)
            soft = min(soft, hard)
        try:
            resource.setrlimit(which, (soft, hard))
        except (ValueError, OSError) as exc:
            raise SandboxError(f"cannot set RLIMIT_{name} to {soft}/{hard}: {exc}") from None


def _mapped_bytes() -> int:
    """The address space this process has mapped now (``VmSize``)."""
    with open("/proc/self/status", "rb") as status:
        for line in status:
            if line.startswith(b"VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _wait_for_placement(expected: tuple[str, ...]) -> None:
    """The server writes the replica's pid into its cgroups when the zygote reports the fork;
    no user code runs before that, so none runs unlimited."""
    deadline = time.monotonic() + PLACEMENT_TIMEOUT_S
    delay = 0.0002
    while True:
        with open("/proc/self/cgroup") as cgroups:
            if set(expected) <= current_cgroups(cgroups.read()):
                return
        if time.monotonic() > deadline:
            raise SandboxError(f"the server did not move the replica into its cgroups "
                               f"{', '.join(expected)} within {PLACEMENT_TIMEOUT_S:g}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.001)
