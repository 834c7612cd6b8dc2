"""Unit tests for the typed messages: the bytes they make, how each reader parses a frame, and
what the server's connection does with frames it cannot take."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from stratus.runtime import messages, wire
from stratus.runtime.connection import FramedConnection
from stratus.runtime.messages import parse

Table = Mapping[int, Callable[[list[Any]], Any]]

# One of each type, with the table of the side that reads it.
SAMPLES: list[tuple[tuple[Any, ...], Table]] = [
    (messages.HelloProfile(messages.HELLO_PROFILE, "default", 41, {"torch": "ImportError: x"}),
     messages.TO_SERVER),
    (messages.HelloRevision(messages.HELLO_REVISION, "k1", 42, True, {"kind": "class"}, None),
     messages.TO_SERVER),
    (messages.HelloReplica(messages.HELLO_REPLICA, "r-1", 43, False, "init failed", "Traceback"),
     messages.TO_SERVER),
    (messages.Load(messages.LOAD, "k1", {"bundle_dir": "/b", "entrypoint": "app.py:F"}),
     messages.TO_PROFILE_ZYGOTE),
    (messages.Fork(messages.FORK, "r-1", {"replica_id": "r-1", "threads": 1}),
     messages.TO_REVISION_ZYGOTE),
    (messages.Kill(messages.KILL, "r-1", "stopped"), messages.TO_REVISION_ZYGOTE),
    (messages.Forked(messages.FORKED, "r-1", 44), messages.TO_SERVER),
    (messages.Exited(messages.EXITED, "r-1", 44, -9, "killed", True), messages.TO_SERVER),
    (messages.Shutdown(messages.SHUTDOWN), messages.TO_REVISION_ZYGOTE),
    (messages.Request(messages.REQUEST, 7, wire.KIND_JSON, b'{"x": 1}', {"timeout": 5.0}),
     messages.TO_REPLICA),
    (messages.Response(messages.RESPONSE, 7, 0, wire.KIND_JSON, b'{"ok": true}'),
     messages.TO_SERVER),
    (messages.Error(messages.ERROR, 8, 500, "handler_error", "boom \u2603", None),
     messages.TO_SERVER),
    (messages.Cancel(messages.CANCEL, 7), messages.TO_REPLICA),
    (messages.Heartbeat(messages.HEARTBEAT, 1, 10, 20, 30, {"peak_rss": 40}), messages.TO_SERVER),
    (messages.Stop(messages.STOP, 2.5), messages.TO_REPLICA),
    (messages.Chunk(messages.CHUNK, 7, wire.KIND_JSON, b"1"), messages.TO_SERVER),
    (messages.Spans(messages.SPANS, [["trace", "span"]]), messages.TO_SERVER),
    (messages.HelloJob(messages.HELLO_JOB, "job-1.1.0", 45), messages.TO_SERVER),
    (messages.ForkJob(messages.FORK_JOB, "job-1.1.0", {"job_id": "job-1", "rank": 0}),
     messages.TO_REVISION_ZYGOTE),
    (messages.JobEventFrame(messages.JOB_EVENT, "MetricLogged", {"name": "loss", "value": 0.5}),
     messages.TO_SERVER),
    (messages.JobCall(messages.JOB_CALL, 3, "checkpoint", {"step": 1, "data": b"\x00\x01"}),
     messages.TO_SERVER),
    (messages.JobReply(messages.JOB_REPLY, 3, True, {"digest": "ab"}), messages.TO_JOB),
    (messages.JobDone(messages.JOB_DONE, False, "ValueError: x", "error"), messages.TO_SERVER),
]
TABLES: list[Table] = [messages.TO_SERVER, messages.TO_PROFILE_ZYGOTE,
                       messages.TO_REVISION_ZYGOTE, messages.TO_REPLICA, messages.TO_JOB]


def _name(sample: tuple[tuple[Any, ...], Table]) -> str:
    return type(sample[0]).__name__


@pytest.mark.parametrize("sample", SAMPLES, ids=_name)
def test_a_message_makes_the_bytes_of_the_same_list(sample: tuple[tuple[Any, ...], Table]) -> None:
    message, _ = sample
    assert wire.encode(message) == wire.encode(list(message))


@pytest.mark.parametrize("sample", SAMPLES, ids=_name)
def test_its_reader_parses_a_decoded_frame_into_the_same_message(
        sample: tuple[tuple[Any, ...], Table]) -> None:
    message, table = sample
    parsed = parse(wire.decode(wire.encode(message)[4:]), table)
    assert type(parsed) is type(message)
    assert parsed == message


def test_every_code_is_read_by_exactly_one_side() -> None:
    codes = [code for table in TABLES for code in table]
    assert len(codes) == len(set(codes)) == len(SAMPLES)
    assert {message.type for message, _ in SAMPLES} == set(codes)


@pytest.mark.parametrize("frame", [[99, 1, 2], [messages.REQUEST, 1, 0, b"", {}], [[1], 2],
                                   [{"a": 1}], ["31", 1, 0, 0, b""], [None]])
def test_a_frame_of_a_type_the_reader_does_not_read_is_none(frame: list[Any]) -> None:
    assert parse(frame, messages.TO_SERVER) is None


@pytest.mark.parametrize("frame", [[messages.RESPONSE, 1, 0, 0], [messages.RESPONSE, 1, 0, 0, b"", 9],
                                   [messages.HELLO_REPLICA, "r-1", 1, True, 1.0],
                                   [messages.HEARTBEAT, 0, 1, 2], [messages.FORKED, "r-1"]])
def test_a_frame_with_the_wrong_number_of_fields_is_malformed(frame: list[Any]) -> None:
    with pytest.raises(ValueError, match=f"type {frame[0]} with {len(frame)} fields"):
        parse(frame, messages.TO_SERVER)


def test_optional_trailing_fields_take_their_defaults() -> None:
    heartbeat = parse([messages.HEARTBEAT, 0, 10, 20, 30], messages.TO_SERVER)
    assert heartbeat == messages.Heartbeat(messages.HEARTBEAT, 0, 10, 20, 30, None)
    exited = parse([messages.EXITED, "r-1", 5, 0, ""], messages.TO_SERVER)
    assert isinstance(exited, messages.Exited) and exited.out_of_memory is False
    assert (exited.cpu_s, exited.peak_rss) == (0.0, 0)


class _Transport:
    def __init__(self) -> None:
        self.closed = False
        self.written: list[bytes] = []

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def write(self, data: bytes) -> None:
        self.written.append(data)


class _Endpoint:
    def __init__(self) -> None:
        self.received: list[messages.ToServer] = []

    def on_message(self, message: messages.ToServer) -> None:
        self.received.append(message)

    def on_close(self) -> None:
        pass


def _connection() -> tuple[FramedConnection, _Transport, _Endpoint, list[messages.ToServer]]:
    endpoint, hellos = _Endpoint(), []

    def accept(hello: messages.ToServer, connection: FramedConnection) -> _Endpoint | None:
        hellos.append(hello)
        return endpoint if isinstance(hello, messages.HelloReplica) else None

    connection = FramedConnection(accept)
    transport = _Transport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    return connection, transport, endpoint, hellos


HELLO = messages.HelloReplica(messages.HELLO_REPLICA, "r-1", 1, True, 1.0, None)


def test_the_server_hands_typed_messages_to_the_endpoint_its_hello_made() -> None:
    connection, transport, endpoint, hellos = _connection()
    answer = messages.Response(messages.RESPONSE, 1, 0, wire.KIND_JSON, b"1")
    connection.data_received(wire.encode(HELLO) + wire.encode([99, "unknown"]) + wire.encode(answer))
    assert hellos == [HELLO] and endpoint.received == [answer]
    assert type(endpoint.received[0]) is messages.Response and not transport.closed


@pytest.mark.parametrize("first", [[99, "r-1"], [messages.REQUEST, 1, 0, b"", {}],
                                   [messages.HELLO_REPLICA, "r-1", 1, True, 1.0]])
def test_the_server_hangs_up_on_a_first_frame_that_is_no_hello(first: list[Any]) -> None:
    connection, transport, _, hellos = _connection()
    connection.data_received(wire.encode(first) + wire.encode(HELLO))
    assert transport.closed and hellos == []


def test_the_server_hangs_up_on_a_malformed_frame_after_the_hello() -> None:
    connection, transport, endpoint, _ = _connection()
    connection.data_received(wire.encode(HELLO) + wire.encode([messages.RESPONSE, 1, 0]))
    assert transport.closed and endpoint.received == []
