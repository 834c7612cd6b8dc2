"""A full disk becomes the one 507 where writes happen: real ENOSPC (/dev/full) and a real
SQLITE_FULL (a database capped by max_page_count), and space coming back clears it."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from stratus.errors import InsufficientStorage, StratusError, storage_full
from stratus.resilience.disk import DiskHealth
from stratus.store.db import make_engine, sqlite_url


def test_enospc_anywhere_in_the_chain_is_a_507() -> None:
    try:
        try:
            with open("/dev/full", "wb") as full:
                full.write(b"x")
        except OSError as exc:
            raise RuntimeError("the upload failed") from exc
    except RuntimeError as outer:
        error = storage_full(outer)
    assert isinstance(error, InsufficientStorage) and isinstance(error, StratusError)
    assert (error.status, error.type) == (507, "insufficient_storage")
    assert "free space" in error.message
    assert storage_full(OSError(errno.EACCES, "denied")) is None
    assert storage_full(ValueError("no")) is None


def test_writing_tells_the_health_and_clears_it_on_success() -> None:
    disk = DiskHealth()
    with pytest.raises(InsufficientStorage), disk.writing("artifacts"), \
            open("/dev/full", "wb", buffering=0) as full:
        full.write(b"x")
    assert list(disk.full) == ["artifacts"]
    with pytest.raises(PermissionError), disk.writing("artifacts"):  # not about space
        raise PermissionError(errno.EACCES, "denied")
    assert list(disk.full) == ["artifacts"]
    with disk.writing("artifacts"), open("/dev/null", "wb") as sink:
        sink.write(b"x")
    assert disk.full == {}


def test_a_full_database_is_a_507_and_space_back_clears_it(tmp_path: Path) -> None:
    disk = DiskHealth()
    engine = make_engine(sqlite_url(tmp_path), disk)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE rows (value BLOB)"))
    with pytest.raises(InsufficientStorage) as caught, engine.begin() as connection:
        connection.execute(text("PRAGMA max_page_count = 3"))  # the file's size: no room left
        for _ in range(20):
            connection.execute(text("INSERT INTO rows VALUES (zeroblob(4096))"))
    assert isinstance(caught.value.__cause__, Exception)
    assert getattr(caught.value.__cause__, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    assert "metadata" in disk.full
    with engine.begin() as connection:  # nothing half-written: the failed transaction is gone
        assert connection.execute(text("SELECT count(*) FROM rows")).scalar() == 0
        assert connection.execute(text("PRAGMA integrity_check")).scalar() == "ok"
    with engine.begin() as connection:
        connection.execute(text("PRAGMA max_page_count = 100000"))
        connection.execute(text("INSERT INTO rows VALUES (zeroblob(4096))"))
    assert disk.full == {}
    engine.dispose()
