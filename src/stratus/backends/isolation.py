"""Tenant isolation for local replicas, on the server's side: the user each namespace's zygotes
and replicas run as, their private directories, their cgroups and rlimits, and the checks
that let only processes the server started speak for a zygote or a replica.

When the server runs as root, each namespace gets its own uid (from ``sandbox.uid_base``,
kept in ``<data-dir>/sandbox-uids.json``; or all share ``sandbox.shared_uid``) and every such
user is in one shared group, the *replicas group*, which may search the few directories
replicas must pass (the data dir, its ``run`` and ``logs``, those holding code and weights).
The code, weights and datasets themselves are readable by the users of the namespaces that
use them alone (ACL entries, ``access.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stratus.backends.access import Access, link_code, private_dir
from stratus.backends.base import CodeSpec, ReplicaSpec
from stratus.backends.preflight import namespace_users_problem
from stratus.config import Settings
from stratus.runtime.cgroups import Cgroups, ReplicaCgroup
from stratus.runtime.connection import Peer
from stratus.runtime.sandbox import (
    Identity,
    ReplicaSandbox,
    SandboxConfig,
    ZygoteSandbox,
    address_space_budget,
    assign_uid,
    base_env,
    cgroup_memory_bytes,
    home_env,
    replica_rlimits,
    sandbox_config,
)
from stratus.store.plaincache import artifacts_config, cache_root

log = logging.getLogger("stratus.sandbox")

UID_FILE = "sandbox-uids.json"
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
SIGKILL_CODE, SIGXCPU_CODE = -9, -24


@dataclass(frozen=True)
class Ending:
    reason: str
    out_of_memory: bool


@dataclass
class _Replica:
    namespace: str
    workdir: Path
    memory_mb: int | None
    identity: Identity | None
    cgroup: ReplicaCgroup | None


def parent_pid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return int(handle.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _path_name(name: str) -> str:
    """A namespace or deployment name as one safe path component."""
    return name if _SAFE_NAME.fullmatch(name) else "x-" + name.encode().hex()[:120]


class Isolation:
    def __init__(self, config: SandboxConfig, data_dir: Path, run_dir: Path, log_dir: Path,
                 environ: Mapping[str, str] | None = None, cache: Path | None = None) -> None:
        self.config = config
        self.data_dir, self.run_dir, self.log_dir = data_dir, run_dir, log_dir
        self.homes = run_dir / "ns"
        self.own_users = config.run_as != "server" and os.geteuid() == 0
        self.socket_dir: Path | None = None
        self.base = base_env(os.environ if environ is None else environ, config.pass_env)
        self.cgroups: Cgroups | None = None
        self.uids: dict[str, int] = {}
        self.replicas: dict[str, _Replica] = {}
        self.cache = cache or cache_root(data_dir)
        # The server may open its own trees only: the data dir and the plaintext cache.
        self.access = Access(config.group_id, (data_dir, self.cache.parent))

    @classmethod
    def for_settings(cls, settings: Settings) -> Isolation:
        """Checked now, so that a bad ``sandbox`` section stops the server before it serves
        (ValueError), and so does a host where replicas would have to run as root without
        the operator's say-so (``run_as: server``)."""
        config = sandbox_config(settings.section("sandbox"))
        where = artifacts_config(settings.section("artifacts")).plaintext
        isolation = cls(config, settings.data_dir, settings.run_dir, settings.log_dir,
                        cache=cache_root(settings.data_dir, where))
        if config.run_as in ("namespace", "shared") and os.geteuid() != 0:
            raise ValueError(f"sandbox.run_as is {config.run_as}, but only a server running as "
                             "root can run replicas as other users")
        if isolation.own_users:
            problem = namespace_users_problem(isolation.first_identity(), settings.data_dir,
                                              isolation.cache)
            if problem:
                raise ValueError(
                    f"sandbox: replicas would have to run as root, which they do only when "
                    f"told to: {problem}. Provide what docs/security.md (Users) lists "
                    f"(CAP_SYS_ADMIN besides CAP_SETUID and CAP_SETGID, or a Python that other "
                    f"users may read; ACLs where decrypted artifacts go), or set "
                    f"sandbox.run_as: server to run replicas as the server's user")
            os.umask(0o077)  # what the server writes from now on is its own
        return isolation

    # -- lifecycle --------------------------------------------------------------------------
    def open(self, adopting: bool = False) -> None:
        """``adopting``: the replicas of the server this one took over from run on, in the
        homes and cgroups it made for them."""
        if self.config.cgroups:
            self.cgroups, reason = Cgroups.detect()
            if self.cgroups is None:
                log.warning("replicas get no cgroups (%s): memory is limited by RLIMIT_AS, "
                            "processes only per namespace user (RLIMIT_NPROC) if at all", reason)
            else:
                log.info("replica cgroups: %s", ", ".join(
                    f"v{h.version} {'+'.join(sorted(h.controllers))} in {h.directory}"
                    for h in self.cgroups.hierarchies))
        if not adopting:
            shutil.rmtree(self.homes, ignore_errors=True)  # what replicas of an earlier run left
        self.homes.mkdir(parents=True, mode=0o700, exist_ok=adopting)
        self._say_who_runs_replicas()
        if self.own_users:
            self._load_uids()
            self.access.close_data_dir(self.data_dir, self.log_dir)
            # The plaintext cache too, before any grant: every zygote checks it can reach it,
            # a built-in server's (no bundle, no model granted yet) included.
            for directory in (self.data_dir, self.run_dir, self.homes, self.log_dir,
                              self.cache.parent, self.cache):
                self.access.open_dir(directory)

    def _say_who_runs_replicas(self) -> None:
        if self.own_users:
            who = (f"uid {self.config.shared_uid} for every namespace"
                   if self.config.run_as == "shared"
                   else f"a user of its own per namespace, uids from {self.config.uid_base}")
            log.info("replicas run as %s (sandbox.run_as: %s), never as root: see "
                     "docs/security.md#users", who, self.config.run_as)
        elif os.geteuid() == 0:
            log.warning("replicas run as root, as the server does (sandbox.run_as: server); "
                        "leave run_as unset to run each namespace's replicas as a user of its "
                        "own: see docs/security.md#users")

    def close(self) -> None:
        if self.cgroups is not None:
            self.cgroups.close()  # every replica's cgroup, and what still runs in it
        self.replicas.clear()
        shutil.rmtree(self.homes, ignore_errors=True)

    def socket_created(self, path: str) -> None:
        """Replica users connect to the server's socket; who they are is checked per hello."""
        self.socket_dir = Path(path).parent
        if self.own_users:
            os.chown(path, -1, self.config.group_id)
            os.chmod(path, 0o660)
            self.access.open_dir(self.socket_dir)

    def profile_env(self) -> dict[str, str]:
        """The environment of a profile zygote (the server's user, trusted imports only)."""
        return {**self.base, "HOME": os.environ.get("HOME", "/")}

    # -- identities -------------------------------------------------------------------------
    def identity(self, namespace: str) -> Identity | None:
        if not self.own_users:
            return None
        if self.config.run_as == "shared":
            return self.first_identity()
        uid = self.uids.get(namespace)
        if uid is None:
            uid = assign_uid(self.uids, namespace, self.config.uid_range())
            self.uids[namespace] = uid
            self._save_uids()
        return Identity(uid, uid, (self.config.group_id,))

    def first_identity(self) -> Identity:
        """The shared user, or the first of the namespace users (whom the start-up check
        stands in for all: to the host, each is just another unprivileged user)."""
        uid = self.config.shared_uid if self.config.run_as == "shared" else self.config.uid_base
        return Identity(uid, uid, (self.config.group_id,))

    def _load_uids(self) -> None:
        path = self.data_dir / UID_FILE
        with contextlib.suppress(FileNotFoundError):
            self.uids = {str(k): int(v) for k, v in json.loads(path.read_text()).items()}

    def _save_uids(self) -> None:
        path = self.data_dir / UID_FILE
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.uids, indent=1, sort_keys=True))
        os.replace(temporary, path)

    def peer_is(self, peer: Peer | None, pid: int, parent: int | None,
                namespace: str | None) -> bool:
        """Whether a connection comes from process ``pid`` (a child of ``parent``, unless
        None) running as the namespace's user: a replica cannot pass for a zygote or for
        another replica."""
        if peer is None or peer.pid != pid:
            return False
        if parent is not None and parent_pid(pid) != parent:
            return False
        identity = self.identity(namespace) if namespace is not None else None
        expected = identity.uid if identity is not None else os.geteuid()
        return peer.uid == expected

    def vouches(self, peer: Peer | None, pid: int, reported: int | None, parent: int | None,
                namespace: str) -> bool:
        """Whether a hello comes from process ``pid`` of the namespace's user: the pid its
        parent reported for it, or, before that report, a live child of the parent (a process
        that already ended can only be recognised by the report)."""
        if reported is not None:
            return reported == pid and self.peer_is(peer, pid, None, namespace)
        return self.peer_is(peer, pid, parent, namespace)

    # -- zygotes and replicas ---------------------------------------------------------------
    def zygote(self, code: CodeSpec) -> ZygoteSandbox:
        identity = self.identity(code.namespace)
        home = self._home(code.namespace, identity)
        reach: tuple[str, ...] = ()
        if identity is not None:
            if code.bundle_dir:
                self.access.grant(Path(code.bundle_dir), identity.uid, tree=True)
            # The server's trees its processes pass through: shown to them if Python's place
            # calls for a mount namespace (runtime/reach.py) and above them is out of reach.
            reach = tuple(str(p) for p in (self.data_dir, self.cache, self.socket_dir) if p)
        env = {**home_env(self.base, str(home), _user(code.namespace)), **code.env}
        rlimits = {"CORE": (0, 0), "NOFILE": (self.config.nofile, self.config.nofile)}
        return ZygoteSandbox(env, identity, rlimits, reach)

    def replica(self, spec: ReplicaSpec) -> ReplicaSandbox:
        config = spec.config
        return self.process(spec.replica_id, config.namespace, config.deployment,
                            spec.code.bundle_dir, config.log_path, config.memory_mb,
                            config.models,
                            threads=config.max_concurrency + config.threads + 4)  # + runtime's

    def process(self, process_id: str, namespace: str, group: str, bundle_dir: str,
                log_path: str, memory_mb: int | None, models: list[dict[str, Any]],
                threads: int) -> ReplicaSandbox:
        """The sandbox of one process forked from a revision zygote (a replica of deployment
        ``group``, or a job worker): its own directory under the namespace's home, the code
        and models it may read, its log, its cgroup and rlimits."""
        identity = self.identity(namespace)
        home = self._home(namespace, identity)
        workdir = home / _path_name(group) / process_id
        private_dir(workdir.parent, identity)
        private_dir(workdir, identity)
        link_code(Path(bundle_dir), workdir, identity)
        model_bytes = 0
        if identity is not None:  # its log's directory and those above it, up to the logs
            log_parent = Path(log_path).parent
            for directory in [*reversed(log_parent.parents), log_parent]:
                if self.log_dir in directory.parents:
                    private_dir(directory, identity, own_files=directory == log_parent)
        for model in models:
            for entry in model["files"].values():
                model_bytes += int(entry.get("size") or 0)
                if identity is not None:
                    self.access.grant(Path(entry["path"]), identity.uid, files=True)
            if identity is not None and model.get("dir"):
                self.access.grant(Path(model["dir"]), identity.uid, tree=True)
        cgroup = self._cgroup(process_id, memory_mb)
        controllers = self.cgroups.controllers if self.cgroups and cgroup else frozenset()
        self.replicas[process_id] = _Replica(namespace, workdir, memory_mb, identity, cgroup)
        return ReplicaSandbox(
            workdir=str(workdir),
            env=home_env(self.base, str(workdir), _user(namespace)),
            rlimits=replica_rlimits(self.config, identity is not None, "pids" in controllers),
            address_space=0 if "memory" in controllers
            else address_space_budget(memory_mb, model_bytes, threads),
            cgroups=cgroup.expected if cgroup else (),
            memory_mb=memory_mb,
        )

    def grant_files(self, namespace: str, paths: list[str]) -> None:
        """Let the namespace's processes read these plaintext files (a job's datasets)."""
        identity = self.identity(namespace)
        if identity is not None:
            for path in paths:
                self.access.grant(Path(path), identity.uid, files=True)

    def _home(self, namespace: str, identity: Identity | None) -> Path:
        home = self.homes / _path_name(namespace)
        private_dir(home, identity)
        return home

    def _cgroup(self, replica_id: str, memory_mb: int | None) -> ReplicaCgroup | None:
        if self.cgroups is None:
            return None
        limit = cgroup_memory_bytes(memory_mb, self.config.memory_headroom_mb)
        try:
            return self.cgroups.create(replica_id, limit, self.config.pids)
        except OSError as exc:
            log.warning("no cgroup for replica %s (%s): RLIMIT_AS limits it", replica_id, exc)
            return None

    def forked(self, replica_id: str, pid: int, zygote_pid: int | None) -> None:
        """The zygote reports a fork: move the replica into its cgroups, once the pid checks
        out as that zygote's child (the zygote runs user code, so it is not taken on trust)."""
        replica = self.replicas.get(replica_id)
        if replica is None or replica.cgroup is None or self.cgroups is None:
            return
        uid = replica.identity.uid if replica.identity else os.geteuid()
        if zygote_pid is None or parent_pid(pid) != zygote_pid or _uid_of(pid) != uid:
            log.error("replica %s: pid %d is not a child of its zygote; not placed", replica_id,
                      pid)
            return
        cgroups, cgroup = self.cgroups, replica.cgroup

        def place() -> None:
            try:
                cgroups.place(cgroup, pid)
            except OSError as exc:
                log.error("replica %s: cannot move pid %d into its cgroup: %s", replica_id, pid,
                          exc)

        # A move waits for an RCU grace period in the kernel (5-15 ms per hierarchy here):
        # not on the event loop. The replica waits for it before running user code.
        asyncio.get_running_loop().run_in_executor(None, place)

    def exited(self, replica_id: str, returncode: int) -> Ending | None:
        """Clean up after a replica; why it ended, when its sandbox ended it."""
        replica = self.replicas.pop(replica_id, None)
        if replica is None:
            return None
        ending = None
        if replica.cgroup is not None and self.cgroups is not None:
            cgroups, cgroup = self.cgroups, replica.cgroup
            if returncode == SIGKILL_CODE and cgroups.oom_killed(cgroup):
                ending = Ending(out_of_memory_reason(replica.memory_mb), True)
            # At once when the replica left nothing running; else what it left was just
            # killed, and waiting for it to exit is not for the event loop.
            if not cgroups.remove(cgroup, wait=0):
                with contextlib.suppress(RuntimeError):  # no loop: close() waits for it
                    asyncio.get_running_loop().run_in_executor(None, cgroups.remove, cgroup)
        if returncode == SIGXCPU_CODE and self.config.cpu_seconds:
            ending = Ending(f"replica used up its CPU time limit of {self.config.cpu_seconds}s",
                            False)
        with contextlib.suppress(RuntimeError):  # no loop: the server is going down
            asyncio.get_running_loop().run_in_executor(
                None, lambda: shutil.rmtree(replica.workdir, ignore_errors=True))
        return ending

    def export(self, replica_id: str) -> dict[str, Any]:
        """What this knows of a running replica, for the server that takes over (``adopt``)."""
        replica = self.replicas.get(replica_id)
        return {} if replica is None else json.loads(json.dumps(
            dataclasses.asdict(replica), default=lambda value: str(value)))

    def adopt(self, replica_id: str, record: dict[str, Any]) -> None:
        if record:
            identity, cgroup = record["identity"], record["cgroup"]
            self.replicas[replica_id] = _Replica(
                record["namespace"], Path(record["workdir"]), record["memory_mb"],
                identity and Identity(identity["uid"], identity["gid"], tuple(identity["groups"])),
                cgroup and ReplicaCgroup(
                    cgroup["name"], tuple(map(Path, cgroup["directories"])),
                    tuple(cgroup["expected"]), cgroup["memory"] and Path(cgroup["memory"]),
                    cgroup["version"]))


def out_of_memory_reason(memory_mb: int | None) -> str:
    return f"replica exceeded its memory limit of {memory_mb} MB" if memory_mb \
        else "replica ran out of memory"


def _uid_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _user(namespace: str) -> str:
    return f"stratus-{_path_name(namespace)}"
