"""A job worker: forked from the revision zygote that imported the job's code, it takes on its
sandbox, says hello to the server on its own connection, runs ``train(ctx)`` once and ends.

Its events travel as frames on that connection, in the order the code made them; the calls
that need an answer (checkpoints, models) wait for the server's reply.
"""

from __future__ import annotations

import itertools
import os
import socket
import sys
import threading
import traceback
from typing import Any, NoReturn

from stratus.runtime import wire
from stratus.runtime.capture import capture_output, finish_capture
from stratus.runtime.forked import is_out_of_memory, reseed_and_size, reset_signals
from stratus.runtime.loader import LoadedHandler
from stratus.runtime.messages import (
    HELLO_JOB,
    JOB_CALL,
    JOB_DONE,
    JOB_EVENT,
    TO_JOB,
    HelloJob,
    JobCall,
    JobConfig,
    JobDone,
    JobEventFrame,
    JobReply,
    parse,
)
from stratus.runtime.sandbox import ReplicaSandbox, SandboxError, compose_env, enter_replica
from stratus.runtime.tracebacks import HandlerTracebacks
from stratus.sdk.context import json_logger
from stratus.sdk.jobs import JobContext


class ServerGone(ConnectionError):
    """The server closed the job's connection: nobody is left to record what it does."""


class SocketChannel:
    """The JobContext's channel over the job's Unix socket. Any thread of the job may use it:
    a lock keeps frames whole and a call's reply paired with it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.decoder = wire.FrameDecoder()
        self.lock = threading.Lock()
        self.ids = itertools.count(1)

    @classmethod
    def connect(cls, path: str, hello: HelloJob) -> SocketChannel:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        sock.sendall(wire.encode(hello))
        return cls(sock)

    def send(self, message: JobEventFrame | JobCall | JobDone) -> None:
        data = wire.encode(message)
        with self.lock:
            self._sendall(data)

    def _sendall(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise ServerGone(f"lost the server: {exc}") from None

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        self.send(JobEventFrame(JOB_EVENT, kind, data))

    def call(self, op: str, payload: dict[str, Any]) -> Any:
        with self.lock:
            call_id = next(self.ids)
            self._sendall(wire.encode(JobCall(JOB_CALL, call_id, op, payload)))
            reply = self._reply(call_id)
        if not reply.ok:
            raise RuntimeError(f"{op} failed on the server: {reply.payload}")
        return reply.payload

    def _reply(self, call_id: int) -> JobReply:
        while True:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ServerGone("the server closed the job's connection")
            for frame in self.decoder.feed(chunk):
                message = parse(frame, TO_JOB)
                if isinstance(message, JobReply) and message.call_id == call_id:
                    return message


def _prepare_process(config: JobConfig) -> None:
    """Undo what the fork inherited from the zygote, then the sandbox and the job's log."""
    reset_signals()
    if config.sandbox:
        enter_replica(ReplicaSandbox.from_wire(config.sandbox), config.env, {})
    else:
        os.environ.update(compose_env({}, config.env, {}))
    capture_output(config.log_path, {"namespace": config.namespace, "job": config.job_id,
                                     "worker": config.rank})
    reseed_and_size(config.threads)


def _outcome(exc: BaseException, tracebacks: HandlerTracebacks) -> JobDone:
    if isinstance(exc, SystemExit) and exc.code in (None, 0):
        return JobDone(JOB_DONE, True, "", "")
    # Into the job's log, which only its namespace may read.
    sys.stderr.write(tracebacks.format(exc) + "\n")
    reason = "out_of_memory" if is_out_of_memory(exc) else "error"
    return JobDone(JOB_DONE, False, f"{type(exc).__name__}: {exc}", reason)


def run_job(loaded: LoadedHandler, config: JobConfig) -> NoReturn:
    """The body of a freshly forked job worker; never returns into the zygote's code."""
    code = 1
    try:
        try:
            _prepare_process(config)
        except SandboxError as exc:  # no user code may run: say why, and end
            sys.stderr.write(f"job {config.job_id}: the worker could not enter its sandbox: "
                             f"{exc}\n")
            os._exit(3)
        channel = SocketChannel.connect(config.socket_path,
                                        HelloJob(HELLO_JOB, config.worker_id, os.getpid()))
        tracebacks = HandlerTracebacks(loaded.bundle_dir)
        logger = json_logger(f"stratus.job.{config.job_id}",
                             {"job": config.job_id, "worker": config.rank},
                             tracebacks.format_exc_info)
        ctx = JobContext(job_id=config.job_id, namespace=config.namespace, params=config.params,
                         datasets=config.datasets, channel=channel, logger=logger,
                         rank=config.rank, world_size=config.world_size,
                         attempt=config.attempt, memory_mb=config.memory_mb,
                         models=config.models)
        try:
            loaded.target(ctx)
            if config.evaluate is not None:  # the job's model is gated: score it here, alive
                # Imported here: scikit-learn and pandas stay out of the zygotes replicas use.
                from stratus.runtime.evaluate import evaluate_saved

                evaluate_saved(ctx, str(config.evaluate["dataset"]), str(config.evaluate["split"]))
            done = JobDone(JOB_DONE, True, "", "")
        except BaseException as exc:
            done = _outcome(exc, tracebacks)
        channel.send(done)
        code = 0 if done.ok else 1
    except BaseException:
        traceback.print_exc()
    finally:
        finish_capture()  # flushes stdout and stderr, then writes out what the pipes hold
        os._exit(code)
