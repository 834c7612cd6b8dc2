"""The audit log's tail against a real server: its records cut off, or replaced by a forged
chain, in the data dir's SQLite database, and its checkpoint file removed, cut or edited; each
is reported by ``GET /api/audit/verify`` and by ``stratus audit verify`` with exit code 1, where
the chain alone finds nothing wrong."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any

import pytest

from server import TEST_ENV, StratusServer
from stratus.security.audit import AuditEvent, Result, chain, verify
from stratus.security.checkpoints import FILE_NAME
from stratus.store.audit import AuditStore
from stratus.store.db import make_engine, sqlite_url


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StratusServer]:
    data_dir = tmp_path_factory.mktemp("audit-tail")
    # Checkpoints by count only: the fixture leaves records past the last one, and a timed
    # checkpoint of them (10 s later by default) landed in the middle of a test that had read
    # the file and then wrote it back without it, when a loaded machine ran slowly.
    (data_dir / "stratus.yaml").write_text(
        "audit:\n  checkpoint_every: 3\n  checkpoint_interval_s: 86400\n")
    instance = StratusServer(data_dir, {**TEST_ENV, "COLUMNS": "250"})
    instance.start()
    for n in range(8):  # mutations, each an audit record
        assert instance.http.delete(f"/api/deployments/ghost-{n}").status_code == 404
    yield instance
    instance.stop()


def _verify(server: StratusServer) -> dict[str, Any]:
    response = server.http.get("/api/audit/verify")
    assert response.status_code == 200, response.text
    verdict: dict[str, Any] = response.json()
    return verdict


def _cli(server: StratusServer) -> tuple[int, str]:
    result = server.cli("audit", "verify", check=False)
    return result.returncode, " ".join(result.stdout.split())


def _file(server: StratusServer) -> Any:
    return server.data_dir / FILE_NAME


def _store(server: StratusServer) -> Iterator[AuditStore]:
    engine = make_engine(sqlite_url(server.data_dir))
    try:
        yield AuditStore(engine)
    finally:
        engine.dispose()


@contextmanager
def _tampered_rows(server: StratusServer, after: int) -> Iterator[None]:
    """The rows past ``after`` as they were, put back once the test is done with them."""
    with closing(sqlite3.connect(server.data_dir / "stratus.db", timeout=10,
                                 isolation_level=None)) as db:
        saved = db.execute("SELECT * FROM audit WHERE id > ? ORDER BY id", (after,)).fetchall()
        columns = [c[1] for c in db.execute("PRAGMA table_info(audit)")]
        try:
            yield
        finally:
            db.execute("DELETE FROM audit WHERE id > ?", (after,))
            db.executemany(f"INSERT INTO audit ({', '.join(columns)}) VALUES "
                           f"({', '.join('?' * len(columns))})", saved)
    assert _verify(server)["ok"]


@contextmanager
def _tampered_file(server: StratusServer) -> Iterator[str]:
    saved = _file(server).read_text()
    try:
        yield saved
    finally:
        _file(server).write_text(saved)
    assert _verify(server)["ok"]


def test_an_untouched_log_verifies_clean(server: StratusServer) -> None:
    verdict = _verify(server)
    assert verdict["ok"] and verdict["findings"] == [] and verdict["first_bad"] is None
    last = verdict["checkpoints"]["last"]
    assert last["seq"] >= 3 and verdict["checkpoints"]["lines"] == last["seq"]
    assert verdict["checkpoints"]["file"] == str(_file(server))
    code, out = _cli(server)
    assert code == 0 and out.startswith(f"intact: {verdict['records']} records; head ")
    assert f"checkpoint {last['seq']} at record {last['id']}" in out


def test_a_tail_deleted_from_the_table_is_truncation(server: StratusServer) -> None:
    last = _verify(server)["checkpoints"]["last"]
    cut = last["id"] - 2
    with _tampered_rows(server, cut):
        with closing(sqlite3.connect(server.data_dir / "stratus.db", isolation_level=None)) as db:
            db.execute("DELETE FROM audit WHERE id > ?", (cut,))
        for store in _store(server):
            assert verify(store.scan()).ok  # what verify checked before: nothing wrong
        verdict = _verify(server)
        assert not verdict["ok"] and verdict["first_bad"] is None
        assert [f["kind"] for f in verdict["findings"]] == ["truncated"]
        assert verdict["findings"][0]["record"] == cut + 1
        assert verdict["findings"][0]["reason"].startswith(f"the log ends at record {cut}, but ")
        code, out = _cli(server)
        assert code == 1 and f"truncated: the log ends at record {cut}, but" in out


def test_a_tail_rewritten_with_a_valid_chain_is_reported(server: StratusServer) -> None:
    head = _verify(server)["head"]["id"]
    keep = head - 3
    with _tampered_rows(server, keep):
        for store in _store(server):
            kept = [record for record in store.scan() if record.id <= keep]
            with closing(sqlite3.connect(server.data_dir / "stratus.db",
                                         isolation_level=None)) as db:
                db.execute("DELETE FROM audit WHERE id > ?", (keep,))
            store.append(chain(kept[-1], [
                AuditEvent(kept[-1].event.at + n, "default", "bootstrap", "keys.create", "k",
                           "10.9.8.7", Result.OK, 201) for n in range(1, 4)]))
            assert verify(store.scan()).ok
        verdict = _verify(server)
        assert not verdict["ok"] and verdict["first_bad"] is None
        assert [f["kind"] for f in verdict["findings"]] == ["rewritten"]
        assert "(its hash differs): the log was rewritten from record" in \
            verdict["findings"][0]["reason"]
        code, out = _cli(server)
        assert code == 1 and "rewritten tail: record " in out


def test_a_checkpoint_file_removed_or_cut_is_a_missing_checkpoint(server: StratusServer) -> None:
    with _tampered_file(server) as saved:
        _file(server).unlink()
        verdict = _verify(server)
        assert not verdict["ok"] and verdict["checkpoints"]["lines"] == 0
        assert {f["kind"] for f in verdict["findings"]} == {"missing_checkpoint"}
        assert "the checkpoint file is missing or empty" in verdict["findings"][0]["reason"]
        code, out = _cli(server)
        assert code == 1 and "missing checkpoint: the checkpoint file is missing or empty" in out

        lines = saved.splitlines(keepends=True)
        _file(server).write_text("".join(lines[:1] + lines[2:]))  # checkpoint 2 taken out
        verdict = _verify(server)
        assert [f["reason"] for f in verdict["findings"]] == ["checkpoint 2 is gone from the file"]
        code, out = _cli(server)
        assert code == 1 and "missing checkpoint: checkpoint 2 is gone from the file" in out


def test_a_checkpoint_edited_without_the_key_is_forged(server: StratusServer) -> None:
    with _tampered_file(server) as saved:
        lines = saved.splitlines()
        second = json.loads(lines[1])
        second["hash"] = "0" * 64  # vouch for some other record
        _file(server).write_text("\n".join([lines[0], json.dumps(second), *lines[2:]]) + "\n")
        verdict = _verify(server)
        assert not verdict["ok"]
        assert verdict["findings"][0] == {
            "kind": "forged_checkpoint", "checkpoint": 2, "record": second["id"],
            "reason": "checkpoint 2 (line 2) fails its MAC: it was edited or forged"}
        code, out = _cli(server)
        assert code == 1 and "forged checkpoint: checkpoint 2 (line 2) fails its MAC" in out


def test_rotation_keeps_the_checkpoints_verifiable(server: StratusServer) -> None:
    lines = _file(server).read_text().splitlines()
    before = {json.loads(line)["kid"] for line in lines}
    rotated = server.http.post("/api/master-key/rotate")
    assert rotated.status_code == 200, rotated.text
    report = rotated.json()
    assert report["retired_key_ids"] == sorted(before) and report["unreadable"] == []
    # Every line there before was re-MAC'd; the writer may add lines meanwhile (the rotation
    # is itself audited), signed under the new key and so not re-MAC'd.
    after = _file(server).read_text().splitlines()
    assert len(lines) <= report["rewrapped"]["audit_checkpoints"] <= len(after)
    assert {json.loads(line)["kid"] for line in _file(server).read_text().splitlines()} == {
        report["master_key_id"]}
    assert _verify(server)["ok"]


def test_a_checkpoint_file_removed_while_the_server_is_stopped(server: StratusServer) -> None:
    """Last: the log keeps the mark of it for good."""
    server.stop()
    _file(server).unlink()
    server.start()
    verdict = _verify(server)
    assert not verdict["ok"] and verdict["findings"]
    assert {f["kind"] for f in verdict["findings"]} == {"missing_checkpoint"}
    assert "the checkpoint file was replaced or cut" in verdict["findings"][0]["reason"]
    code, out = _cli(server)
    assert code == 1 and "missing checkpoint: checkpoint 1 vouches for record" in out
