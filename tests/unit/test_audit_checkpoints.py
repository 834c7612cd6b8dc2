"""The audit log's tail anchored by MAC'd checkpoints, with the real writer, a real SQLite store
and a real checkpoint file: what is done to them is done for real (rows deleted and forged,
lines cut and edited), and verification must say which it was where the chain alone cannot."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from stratus.security.audit import AuditEvent, AuditRecord, Result, chain, verify
from stratus.security.audit_log import AuditLog
from stratus.security.checkpoint_file import CheckpointFile
from stratus.security.checkpointer import Checkpointer
from stratus.security.checkpoints import (
    FILE_NAME,
    LABEL,
    Checkpoint,
    CheckpointPolicy,
    checkpoint_policy,
)
from stratus.security.crypto import derive_key
from stratus.security.masterkey import Keyring, MasterKey
from stratus.security.rotation import rotate_master
from stratus.security.tail_check import Kind, TailCheck, WriterState
from stratus.store.audit import AuditStore
from stratus.store.db import make_engine, migrate, sqlite_url

EVERY = 10


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    made = make_engine(sqlite_url(tmp_path))
    migrate(made)
    yield made
    made.dispose()


@pytest.fixture
def keyring(tmp_path: Path) -> Keyring:
    return Keyring([MasterKey.generate()], "file", tmp_path / "master.key")


def _event(n: int) -> AuditEvent:
    return AuditEvent(1_700_000_000 + n, "default", "bootstrap", "deployments.update",
                      f"web-{n}", "127.0.0.1", Result.OK, 200, f"req-{n}")


class Server:
    """One server's audit side: the writer, its checkpoints, on a store it may share."""

    def __init__(self, store: AuditStore, place: Path, keyring: Keyring,
                 policy: CheckpointPolicy | None = None) -> None:
        self.store = store
        self.file = CheckpointFile(place / FILE_NAME, keyring)
        self.policy = policy or CheckpointPolicy(checkpoint_every=EVERY, checkpoint_interval_s=60)
        self.log: AuditLog | None = None

    async def start(self) -> AuditLog:
        self.log = AuditLog()
        self.log.start(self.store, Checkpointer(self.file, self.policy))
        assert await self.log.flush()  # its start is recorded and checkpointed
        return self.log

    async def write(self, first: int, count: int) -> None:
        assert self.log is not None
        for n in range(first, first + count):  # one at a time: checkpoints land predictably
            self.log.append(_event(n))
            assert await self.log.flush()

    async def stop(self) -> None:
        assert self.log is not None
        await self.log.close()

    def verify(self) -> tuple[bool, list[tuple[Kind, str]]]:
        assert self.log is not None and self.log.checkpoints is not None
        verdict, check = self.log.checkpoints.verify(self.store.scan())
        return verdict.ok and not check.findings, [(f.kind, f.reason) for f in check.findings]


def _kinds(found: list[tuple[Kind, str]]) -> set[Kind]:
    return {kind for kind, _ in found}


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_an_untouched_log_verifies_clean_across_restarts(
        engine: Engine, keyring: Keyring, tmp_path: Path) -> None:
    server = Server(AuditStore(engine), tmp_path, keyring)
    await server.start()
    await server.write(1, 35)
    assert server.verify() == (True, [])
    await server.stop()
    # Record 1 says the server started, and checkpoint 1 vouches for it; then one checkpoint
    # per 10 records; record 37 says it stopped, and checkpoint 5 vouches for it.
    assert [(line["seq"], line["id"]) for line in _lines(server.file.path)] == [
        (1, 1), (2, 11), (3, 21), (4, 31), (5, 37)]
    assert {line["kid"] for line in _lines(server.file.path)} == {keyring.primary.kid}

    await server.start()  # a restart continues both the chain and the file
    await server.write(36, 5)
    assert server.verify() == (True, [])
    await server.stop()
    assert server.verify() == (True, [])
    writer = server.file.writer
    assert [(r.id, r.event.actor, r.event.action, r.event.target) for r in server.store.scan()
            if r.event.action.startswith("audit.")] == [
        (1, "stratus", "audit.checkpoints.open", f"writer {writer} checkpoint 1"),
        (37, "stratus", "audit.checkpoints.close", f"writer {writer} checkpoint 5"),
        (38, "stratus", "audit.checkpoints.open", f"writer {writer} checkpoint 6"),
        (44, "stratus", "audit.checkpoints.close", f"writer {writer} checkpoint 7")]


async def test_a_tail_cut_from_the_table_is_truncation(
        engine: Engine, keyring: Keyring, tmp_path: Path) -> None:
    server = Server(AuditStore(engine), tmp_path, keyring)
    await server.start()
    await server.write(1, 30)
    await server.stop()  # the last checkpoint vouches for record 31
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM audit WHERE id > 25"))
    records = list(server.store.scan())
    assert verify(records).ok  # the chain alone sees nothing wrong
    ok, found = server.verify()
    assert not ok and _kinds(found) == {Kind.TRUNCATED}
    assert found[0][1] == ("the log ends at record 25, but checkpoint 5 vouches for record 32: "
                           "records 26 to 32 are cut from its end")


async def test_a_tail_replaced_by_a_forged_chain_is_rewritten(
        engine: Engine, keyring: Keyring, tmp_path: Path) -> None:
    server = Server(AuditStore(engine), tmp_path, keyring)
    await server.start()
    await server.write(1, 30)
    await server.stop()
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM audit WHERE id > 27"))
    kept = list(server.store.scan())
    forged = chain(kept[-1], [AuditEvent(1_700_000_100 + n, "default", "bootstrap", "keys.create",
                                          "nothing-to-see", "10.0.0.9", Result.OK, 201)
                              for n in range(5)])
    server.store.append(forged)
    assert verify(server.store.scan()).ok  # a valid chain, as long as before
    ok, found = server.verify()
    assert not ok and _kinds(found) == {Kind.REWRITTEN}
    assert found[0][1] == ("record 31 is not the record checkpoint 4 vouches for (its hash "
                           "differs): the log was rewritten from record 31 or earlier (3 anchors "
                           "disagree)")


async def test_records_cut_since_the_last_checkpoint_are_seen_by_the_running_writer(
        engine: Engine, keyring: Keyring, tmp_path: Path) -> None:
    server = Server(AuditStore(engine), tmp_path, keyring)
    await server.start()
    await server.write(1, 14)  # checkpoints at records 1 and 11; 12 to 15 not yet
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM audit WHERE id > 12"))
    ok, found = server.verify()
    assert not ok and found == [(Kind.TRUNCATED, "the log ends at record 12, but this server's "
                                                 "last record vouches for record 15: records 13 "
                                                 "to 15 are cut from its end")]


async def test_a_checkpoint_file_removed_or_cut_under_a_running_writer_is_missing(
        engine: Engine, keyring: Keyring, tmp_path: Path) -> None:
    server = Server(AuditStore(engine), tmp_path, keyring)
    await server.start()
    await server.write(1, 30)
    saved = server.file.path.read_text()
    server.file.path.unlink()
    ok, found = server.verify()
    assert not ok and found == [
        (Kind.MISSING_CHECKPOINT, "the checkpoint file is missing or empty, but this server "
                                  "wrote checkpoints up to 4"),
        (Kind.MISSING_CHECKPOINT, "checkpoint 1, which vouches for this server's start at "
                                  "record 1, is gone from the file")]
    server.file.path.write_text("".join(saved.splitlines(keepends=True)[:2]))
    ok, found = server.verify()
    assert not ok and found == [(Kind.MISSING_CHECKPOINT, "checkpoints 3 to 4 are gone from the "
                                                          "file, but this server wrote "
                                                          "checkpoints up to 4")]
    server.file.path.write_text(saved)
    assert server.verify() == (True, [])
    await server.stop()


async def test_a_checkpoint_file_removed_while_stopped_is_missing_after_a_restart(
        engine: Engine, keyring: Keyring, tmp_path: Path) -> None:
    server = Server(AuditStore(engine), tmp_path, keyring)
    await server.start()
    await server.write(1, 30)
    await server.stop()
    server.file.path.unlink()
    await server.start()  # a new file: its checkpoint 1 vouches for this start, at record 33
    ok, found = server.verify()
    assert not ok and found == [
        (Kind.MISSING_CHECKPOINT, "checkpoint 1 vouches for record 33, not for this server's "
                                  "start at record 1: the checkpoint file was replaced or cut"),
        (Kind.MISSING_CHECKPOINT, "checkpoint 5, which vouches for this server's stop at "
                                  "record 32, is gone from the file")]
    await server.stop()


async def test_a_checkpoint_file_cut_while_stopped_is_missing_after_a_restart(
        engine: Engine, keyring: Keyring, tmp_path: Path) -> None:
    server = Server(AuditStore(engine), tmp_path, keyring)
    await server.start()
    await server.write(1, 30)
    await server.stop()
    lines = server.file.path.read_text().splitlines(keepends=True)
    server.file.path.write_text("".join(lines[:3]))
    await server.start()  # it goes on from checkpoint 3, as if 4 and 5 never were
    ok, found = server.verify()
    assert not ok and found == [
        (Kind.MISSING_CHECKPOINT, "checkpoint 5, which vouches for this server's stop at "
                                  "record 32, is gone from the file")]
    await server.stop()


async def test_a_line_taken_from_the_middle_is_a_gap(
        engine: Engine, keyring: Keyring, tmp_path: Path) -> None:
    server = Server(AuditStore(engine), tmp_path, keyring)
    await server.start()
    await server.write(1, 30)
    await server.stop()
    lines = server.file.path.read_text().splitlines(keepends=True)
    server.file.path.write_text("".join(lines[:2] + lines[3:]))
    ok, found = server.verify()
    assert not ok and found == [(Kind.MISSING_CHECKPOINT, "checkpoint 3 is gone from the file")]
    assert verify(server.store.scan()).ok


async def test_an_edited_or_forged_checkpoint_fails_its_mac(
        engine: Engine, keyring: Keyring, tmp_path: Path) -> None:
    """Without the master key, a line cannot be made to vouch for a rewritten tail."""
    server = Server(AuditStore(engine), tmp_path, keyring)
    await server.start()
    await server.write(1, 30)
    await server.stop()
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM audit WHERE id > 27"))
    kept = list(server.store.scan())
    forged = chain(kept[-1], [_event(100 + n) for n in range(5)])
    server.store.append(forged)
    lines = _lines(server.file.path)
    lines[-1]["hash"] = forged[-1].hash  # vouch for the forged head instead
    guessed = Checkpoint(**{**lines[-2], "id": 30, "seq": 4})  # type: ignore[arg-type]
    lines[-2] = json.loads(guessed.signed(derive_key(b"x" * 32, LABEL), guessed.kid).line())
    server.file.path.write_text("".join(json.dumps(line) + "\n" for line in lines) + "{torn")
    ok, found = server.verify()
    assert not ok
    assert [kind for kind, _ in found] == [Kind.FORGED_CHECKPOINT] * 3 + [
        Kind.MISSING_CHECKPOINT, Kind.REWRITTEN]
    assert found[0][1] == "checkpoint 4 (line 4) fails its MAC: it was edited or forged"
    assert found[1][1] == "checkpoint 5 (line 5) fails its MAC: it was edited or forged"
    assert found[2][1] == "line 6 of the checkpoint file is not a checkpoint: '{torn'"
    assert found[3][1] == ("checkpoints 4 to 5 are gone from the file, but this server wrote "
                           "checkpoints up to 5")
    assert found[4][1].startswith("record 32 is not the record this server's last record")


async def test_rotation_re_macs_the_checkpoints_and_the_old_key_can_go(
        engine: Engine, tmp_path: Path) -> None:
    key_file = tmp_path / "master.key"
    old = MasterKey.generate()
    key_file.write_text(old.encoded() + "\n")
    key_file.chmod(0o600)
    keyring = Keyring([old], "file", key_file)
    server = Server(AuditStore(engine), tmp_path, keyring)
    await server.start()
    await server.write(1, 25)
    report = rotate_master(keyring, {"audit_checkpoints": server.file})
    assert report["retired_key_ids"] == [old.kid] and report["unreadable"] == []
    assert report["rewrapped"]["audit_checkpoints"] == 3
    await server.write(26, 10)  # during and after: lines under the new key
    await server.stop()
    assert {line["kid"] for line in _lines(server.file.path)} == {keyring.primary.kid}
    assert keyring.kids == [keyring.primary.kid]  # the old key is gone
    assert server.verify() == (True, [])

    # A checkpoint under a key no longer held is reported, and does not stop a rotation.
    stranger = Keyring([MasterKey.generate()], "env", None)
    other = Server(server.store, tmp_path, stranger)
    await other.start()
    ok, found = other.verify()
    assert not ok and Kind.UNKNOWN_KEY in _kinds(found)
    assert other.file.kids_in_use() == {stranger.primary.kid}
    await other.stop()


async def test_two_servers_on_one_chain_each_verify_their_checkpoints(
        engine: Engine, keyring: Keyring, tmp_path: Path) -> None:
    store = AuditStore(engine)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    left, right = Server(store, tmp_path / "a", keyring), Server(store, tmp_path / "b", keyring)
    await left.start()
    await right.start()
    for n in range(0, 60, 6):  # interleaved: each one's tail goes stale, ids collide
        await (left if n % 12 else right).write(n, 6)
    await asyncio.gather(left.stop(), right.stop())
    assert left.file.writer != right.file.writer
    assert left.verify() == (True, []) and right.verify() == (True, [])
    records = list(store.scan())
    assert len(records) == 64 and verify(records).ok  # 60 events, a start and a stop each
    for server in (left, right):  # each vouches for records of its own, the other's between
        ids = [line["id"] for line in _lines(server.file.path)]
        assert ids == sorted(ids) and ids[-1] in (63, 64)


async def test_a_quiet_writer_checkpoints_after_the_interval(
        engine: Engine, keyring: Keyring, tmp_path: Path) -> None:
    server = Server(AuditStore(engine), tmp_path, keyring,
                    CheckpointPolicy(checkpoint_every=1000, checkpoint_interval_s=0.3))
    await server.start()
    await server.write(1, 3)
    assert [line["id"] for line in _lines(server.file.path)] == [1]

    def wait_for_the_interval() -> None:
        deadline = time.monotonic() + 5
        while len(_lines(server.file.path)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)

    await asyncio.to_thread(wait_for_the_interval)  # the writer is idle meanwhile
    assert [line["id"] for line in _lines(server.file.path)] == [1, 4]
    await server.stop()
    assert [line["id"] for line in _lines(server.file.path)] == [1, 4, 5]  # the stop

def test_the_policy_is_checked_when_the_server_starts() -> None:
    assert checkpoint_policy({}) == CheckpointPolicy(checkpoint_every=100,
                                                     checkpoint_interval_s=10.0)
    with pytest.raises(ValueError, match=r"(?s)invalid audit section.*checkpoint_every"):
        checkpoint_policy({"checkpoint_every": 0})
    with pytest.raises(ValueError, match=r"(?s)invalid audit section.*unknown"):
        checkpoint_policy({"unknown": 1})


def test_records_vouched_for_are_compared_by_hash(tmp_path: Path, keyring: Keyring) -> None:
    """The pure check alone: a record missing below a checkpoint is truncation too."""
    events = [_event(n) for n in range(1, 6)]
    records: list[AuditRecord] = chain(None, events)
    file = CheckpointFile(tmp_path / FILE_NAME, keyring)
    file.append(1, 3, records[2].hash, 0.0)
    check = TailCheck(file.read(), file.key_for, WriterState(file.writer, 1, None))
    list(check.watch([r for r in records if r.id != 3]))
    assert [(f.kind, f.reason) for f in check.finish()] == [
        (Kind.TRUNCATED, "record 3, which checkpoint 1 vouches for, is missing")]
