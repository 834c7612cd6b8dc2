"""Database engine set-up and schema migrations (alembic) for the metadata store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, ExceptionContext, create_engine, event

from stratus.errors import storage_full
from stratus.resilience.disk import DiskHealth

MIGRATIONS = Path(__file__).with_name("migrations")


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'stratus.db'}"


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers proceed while the controller writes; the busy timeout rides out
    # the short write locks instead of failing with "database is locked".
    cursor.execute("PRAGMA journal_mode=WAL")
    # NORMAL is enough for a crash of the server (kill -9): a commit has written its WAL
    # frames to the kernel before it returns, and they outlive the process. Only a crash of
    # the host may lose the last commits (never corrupting the file); FULL's fsync per commit
    # would guard against that at the price of every commit on the request path.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def make_engine(url: str, disk: DiskHealth | None = None) -> Engine:
    """The engine for ``url``; a write refused for lack of space raises ``InsufficientStorage``
    (507) wherever it happens, and is told to ``disk``."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _tune_sqlite)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    _watch_space(engine, disk or DiskHealth())
    return engine


_WRITES = ("INSERT", "UPDATE", "DELETE")
_WROTE = "stratus_wrote"  # in a connection's info: it wrote since its last commit


def _watch_space(engine: Engine, disk: DiskHealth) -> None:
    """Map a full disk to the one 507 at the engine, the place every store shares; a commit
    after a write shows that space is back."""

    def handle_error(context: ExceptionContext) -> None:
        full = storage_full(context.original_exception)
        if full is not None:
            disk.failed("metadata", full.message)
            raise full from context.original_exception

    def after_execute(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip()[:6].upper() in _WRITES:
            conn.info[_WROTE] = True

    def commit(conn: Any) -> None:
        if conn.info.pop(_WROTE, False):
            disk.succeeded("metadata")

    event.listen(engine, "handle_error", handle_error)
    event.listen(engine, "after_cursor_execute", after_execute)
    event.listen(engine, "commit", commit)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision; safe to run at every start."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
