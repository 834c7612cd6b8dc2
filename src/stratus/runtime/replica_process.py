"""A replica process's life: what it undoes of the zygote it was forked from, its sandbox,
the user's init, its hello to the server, then ``ReplicaServer`` serving until it stops."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time
import traceback
from typing import Any, NoReturn

from stratus.runtime import wire
from stratus.runtime.capture import capture_output, finish_capture
from stratus.runtime.forked import reseed_and_size, reset_signals
from stratus.runtime.loader import LoadedHandler, instantiate
from stratus.runtime.messages import HELLO_REPLICA, HelloReplica, ReplicaConfig
from stratus.runtime.replica import ReplicaServer
from stratus.runtime.sandbox import ReplicaSandbox, SandboxError, compose_env, enter_replica
from stratus.runtime.tracebacks import HandlerTracebacks
from stratus.sdk.context import Context, replica_logger

FAILED_HELLO_WAIT_S = 2.0  # for the server to read a failed init's reason


def _prepare_process(config: ReplicaConfig) -> None:
    """Undo what the fork inherited from the zygote and set per-replica resources."""
    reset_signals()
    if config.sandbox:
        # Before any user code: its cgroup, its own directory, environment and limits.
        enter_replica(ReplicaSandbox.from_wire(config.sandbox), config.env, config.secrets)
    else:
        os.environ.update(compose_env({}, {}, config.secrets))
    capture_output(config.log_path, {"namespace": config.namespace, "deployment": config.deployment,
                                     "revision": config.revision, "replica": config.replica_id})
    reseed_and_size(config.threads)



async def _serve(sock: socket.socket, handler: Any, loaded: LoadedHandler, ctx: Context,
                 config: ReplicaConfig) -> None:
    loop = asyncio.get_running_loop()
    _, server = await loop.create_unix_connection(
        lambda: ReplicaServer(handler, loaded, ctx, config), sock=sock
    )
    await server.done
    if server.transport is not None:
        server.transport.close()


def run_replica(loaded: LoadedHandler, config: ReplicaConfig) -> NoReturn:
    """The body of a freshly forked replica; never returns into the zygote's code."""
    code = 1
    try:
        try:
            _prepare_process(config)
        except SandboxError as exc:  # no user code may run: say why, and end
            sys.stderr.write(f"replica {config.replica_id}: {exc}\n")
            _say_hello(config, HelloReplica(HELLO_REPLICA, config.replica_id, os.getpid(), False,
                                            f"the replica could not enter its sandbox: {exc}",
                                            None))
            os._exit(1)
        tracebacks = HandlerTracebacks(loaded.bundle_dir)
        logger = replica_logger(config.deployment, config.revision, config.replica_id,
                                tracebacks.format_exc_info)
        ctx = Context(
            deployment=config.deployment, namespace=config.namespace, revision=config.revision,
            replica_id=config.replica_id, config=config.config, env={**config.env, **config.secrets},
            memory_mb=config.memory_mb, timeout_s=config.timeout_s, logger=logger,
            threads=config.threads, models=config.models,
        )
        started = time.perf_counter()
        try:
            handler = instantiate(loaded, ctx)
            hello = HelloReplica(HELLO_REPLICA, config.replica_id, os.getpid(), True,
                                 (time.perf_counter() - started) * 1000, None)
        except BaseException as exc:
            handler = None
            trace = tracebacks.format(exc) + "\n"
            sys.stderr.write(trace)
            hello = HelloReplica(HELLO_REPLICA, config.replica_id, os.getpid(), False,
                                 f"{type(exc).__name__}: {exc}", trace)
        sock = _say_hello(config, hello)
        if handler is not None:
            import uvloop

            sock.setblocking(False)
            uvloop.run(_serve(sock, handler, loaded, ctx, config))
            code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        finish_capture()  # flushes stdout and stderr, then writes out what the pipes hold
        os._exit(code)


def _say_hello(config: ReplicaConfig, hello: HelloReplica) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(config.socket_path)
    sock.sendall(wire.encode(hello))
    if not hello.ok:
        # The server closes the connection once it has read why: only then exit, or the
        # zygote's report of the exit, on another connection, may be read first and the
        # reason lost ("replica died during init").
        sock.settimeout(FAILED_HELLO_WAIT_S)
        with contextlib.suppress(OSError):
            while sock.recv(4096):
                pass
    return sock
