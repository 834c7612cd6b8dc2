"""Zygotes: warm, thread-free processes that replicas are forked from.

A *profile zygote* (one per runtime profile) imports the profile's heavy modules and the
replica runtime, then forks one *revision zygote* per code bundle, which imports the
user's module and validates the handler. Replicas are forked from the revision zygote,
so a cold start pays neither interpreter start-up nor imports: only the user's init.

Both zygotes use blocking sockets and a select loop. Nothing here may start a thread:
a fork copies only the calling thread, so a lock held by another would never be released.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import os
import selectors
import signal
import sys
import traceback
from typing import Any, NoReturn

from stratus.errors import DeployError
from stratus.runtime import wire
from stratus.runtime.job import run_job
from stratus.runtime.loader import HandlerKind, LoadedHandler, load_handler
from stratus.runtime.memory import read_memory
from stratus.runtime.messages import (
    EXITED,
    FORKED,
    HELLO_PROFILE,
    HELLO_REVISION,
    TO_PROFILE_ZYGOTE,
    TO_REVISION_ZYGOTE,
    Exited,
    Fork,
    Forked,
    ForkJob,
    HelloProfile,
    HelloRevision,
    JobConfig,
    Kill,
    ReplicaConfig,
    Shutdown,
    ToRevisionZygote,
    parse,
)
from stratus.runtime.replica_process import run_replica
from stratus.runtime.request_log import install_streams
from stratus.runtime.sandbox import SandboxError, ZygoteSandbox, enter_zygote
from stratus.runtime.tracebacks import HandlerTracebacks

# Imported here so that forked replicas find them already loaded. numpy.random is imported
# lazily by numpy itself: without it here, every fork's reseed paid 10-18 ms to import it.
_RUNTIME_MODULES = ("asyncio", "concurrent.futures", "json", "uvloop", "numpy", "numpy.random",
                    "stratus.runtime.tensors")

WATCHDOG_INTERVAL_S = 0.25


class _ChildWatcher:
    """Wakes the select loop on SIGCHLD, through the signal module's wakeup fd."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.set_wakeup_fd(self.write_fd)

    def drain(self) -> None:
        try:
            while os.read(self.read_fd, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        os.close(self.read_fd)
        os.close(self.write_fd)


def _reap() -> list[tuple[int, int, float, int]]:
    """Collect exited children as (pid, returncode, CPU seconds, peak RSS bytes); a negative
    code is the killing signal."""
    exited: list[tuple[int, int, float, int]] = []
    while True:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return exited
        if pid == 0:
            return exited
        exited.append((pid, os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime,
                       usage.ru_maxrss * 1024))


class RevisionZygote:
    """Holds one imported code bundle and forks replicas of it on request."""

    def __init__(self, channel: wire.BlockingChannel, loaded: LoadedHandler, watcher: _ChildWatcher):
        self.channel = channel
        self.loaded = loaded
        self.watcher = watcher
        self.children: dict[int, str] = {}  # pid -> replica id
        self.memory_limits: dict[int, int] = {}  # pid -> bytes
        self.kill_reasons: dict[int, str] = {}
        self.out_of_memory: set[int] = set()  # pids the watchdog killed
        self.groups: set[int] = set()  # job workers: each leads a process group, killed whole

    def serve(self) -> NoReturn:
        selector = selectors.DefaultSelector()
        selector.register(self.channel.sock, selectors.EVENT_READ, "server")
        selector.register(self.watcher.read_fd, selectors.EVENT_READ, "child")
        while True:
            timeout = WATCHDOG_INTERVAL_S if self.memory_limits else None
            for key, _ in selector.select(timeout):
                if key.data == "child":
                    self.watcher.drain()
                    self._report_exits()
                    continue
                frames = self.channel.receive_available()
                if frames is None:
                    self._shutdown()
                for frame in frames:
                    self._handle(parse(frame, TO_REVISION_ZYGOTE))
            self._check_memory()
            self._report_exits()

    def _handle(self, message: ToRevisionZygote | None) -> None:
        is_job = self.loaded.kind is HandlerKind.JOB
        if isinstance(message, Fork) and not is_job:
            self._fork(message.replica_id, message.replica_config)
        elif isinstance(message, ForkJob) and is_job:
            self._fork_job(message.worker_id, message.job_config)
        elif isinstance(message, Kill):
            self._kill(message.replica_id, message.reason)
        elif isinstance(message, Shutdown):
            self._shutdown()

    def _fork(self, replica_id: str, config_data: dict[str, Any]) -> None:
        config = ReplicaConfig.from_wire(config_data)
        pid = os.fork()
        if pid == 0:
            self.channel.close()
            self.watcher.close()
            gc.enable()
            run_replica(self.loaded, config)
        self.children[pid] = replica_id
        if config.memory_mb:
            self.memory_limits[pid] = config.memory_mb * 1024 * 1024
        self.channel.send(Forked(FORKED, replica_id, pid))

    def _fork_job(self, worker_id: str, config_data: dict[str, Any]) -> None:
        config = JobConfig.from_wire(config_data)
        pid = os.fork()
        if pid == 0:
            os.setpgid(0, 0)  # its own group: what the job starts (data loaders) dies with it
            self.channel.close()
            self.watcher.close()
            gc.enable()
            run_job(self.loaded, config)
        with contextlib.suppress(OSError):  # both sides set it: no kill can come before it
            os.setpgid(pid, pid)
        self.children[pid] = worker_id
        self.groups.add(pid)
        if config.memory_mb:
            self.memory_limits[pid] = config.memory_mb * 1024 * 1024
        self.channel.send(Forked(FORKED, worker_id, pid))

    def _kill(self, replica_id: str, reason: str) -> None:
        for pid, child_id in self.children.items():
            if child_id == replica_id:
                self.kill_reasons.setdefault(pid, reason)
                self._signal(pid)

    def _signal(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if pid in self.groups:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)

    def _check_memory(self) -> None:
        for pid, limit in list(self.memory_limits.items()):
            used = read_memory(pid).charged
            if used > limit:
                reason = (
                    f"replica exceeded its memory limit of {limit // 2**20} MB "
                    f"({used // 2**20} MiB of its own memory)"
                )
                self._kill(self.children[pid], reason)
                self.out_of_memory.add(pid)
                del self.memory_limits[pid]

    def _report_exits(self) -> None:
        for pid, returncode, cpu_s, peak_rss in _reap():
            replica_id = self.children.pop(pid, None)
            self.memory_limits.pop(pid, None)
            if pid in self.groups:  # the rest of a job's group goes with its leader
                self._signal(pid)
                self.groups.discard(pid)
            reason = self.kill_reasons.pop(pid, "")
            out_of_memory = pid in self.out_of_memory
            self.out_of_memory.discard(pid)
            if replica_id is not None:
                self.channel.send(Exited(EXITED, replica_id, pid, returncode, reason,
                                         out_of_memory, cpu_s, peak_rss))

    def _shutdown(self) -> NoReturn:
        for pid in self.children:
            self._signal(pid)
        os._exit(0)


def _become_revision_zygote(socket_path: str, code_key: str, spec: dict[str, Any]) -> NoReturn:
    """Runs in the child of a profile zygote: import the bundle, report, then fork replicas."""
    code = 1
    try:
        watcher = _ChildWatcher()
        # As Lambda's /var/task: the bundle is the working directory of the import, so
        # relative paths resolve inside the code (each replica then gets its own directory).
        os.chdir(spec["bundle_dir"])
        loaded: LoadedHandler | None = None
        try:
            # Before any user code runs: the namespace's user, environment and limits.
            if spec.get("sandbox"):
                enter_zygote(ZygoteSandbox.from_wire(spec["sandbox"]))
            else:
                os.environ.update(spec.get("env") or {})
            install_streams()  # so a logging handler the module makes writes to them
            loaded = load_handler(spec["bundle_dir"], spec["entrypoint"],
                                  job=spec.get("kind") == "job")
            meta = loaded.describe()
            meta["threads"] = len(os.listdir("/proc/self/task"))
            hello = HelloRevision(HELLO_REVISION, code_key, os.getpid(), True, meta, None)
        except DeployError as exc:
            # The user's exception, when importing their code raised one: the loader's own
            # frames above it say nothing they can act on.
            trace = HandlerTracebacks(spec["bundle_dir"]).format(exc.__cause__ or exc)
            hello = HelloRevision(HELLO_REVISION, code_key, os.getpid(), False, exc.message,
                                  trace + "\n")
        except SandboxError as exc:
            hello = HelloRevision(HELLO_REVISION, code_key, os.getpid(), False,
                                  f"the zygote could not enter its sandbox: {exc}", None)
        channel = wire.BlockingChannel.connect(socket_path)
        channel.send(hello)
        if loaded is not None:
            # Move everything imported so far out of the collector's reach: a collection in
            # a replica would otherwise touch (and so copy) every page of shared objects.
            gc.freeze()
            RevisionZygote(channel, loaded, watcher).serve()
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def run_profile_zygote(socket_path: str, profile: str, preload: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    gc.disable()
    errors: dict[str, str] = {}
    for module in [*_RUNTIME_MODULES, *preload]:
        try:
            importlib.import_module(module)
        except Exception as exc:
            errors[module] = f"{type(exc).__name__}: {exc}"
    channel = wire.BlockingChannel.connect(socket_path)
    channel.send(HelloProfile(HELLO_PROFILE, profile, os.getpid(), errors))
    watcher = _ChildWatcher()
    selector = selectors.DefaultSelector()
    selector.register(channel.sock, selectors.EVENT_READ, "server")
    selector.register(watcher.read_fd, selectors.EVENT_READ, "child")
    while True:
        for key, _ in selector.select():
            if key.data == "child":
                watcher.drain()
                _reap()
                continue
            frames = channel.receive_available()
            if frames is None:
                return 0
            for frame in frames:
                load = parse(frame, TO_PROFILE_ZYGOTE)
                if load is None:
                    continue
                pid = os.fork()
                if pid == 0:
                    selector.close()
                    channel.close()
                    watcher.close()
                    _become_revision_zygote(socket_path, load.code_key, load.load_spec)
                # The server recognises the revision zygote's hello by this pid.
                channel.send(Forked(FORKED, load.code_key, pid))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Stratus profile zygote (started by the server)")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--profile", required=True)
    parser.add_argument("--preload", default="")
    args = parser.parse_args(argv)
    preload = [module for module in args.preload.split(",") if module]
    return run_profile_zygote(args.socket, args.profile, preload)


if __name__ == "__main__":
    sys.exit(main())
