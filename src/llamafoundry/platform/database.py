"""The database under the platform's store: its URL, the SQLAlchemy engine (how SQLite is opened so several
processes can share it) and the alembic migrations that build and change the schema.

SQLite runs in WAL mode (readers never wait for a writer) and every transaction starts with `BEGIN IMMEDIATE`,
so two processes that write at once (a `deploy` command and a server) queue on the lock instead of failing, and
migrations are serialised the same way. On PostgreSQL, migrations take an advisory lock.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

SQLITE_FILE = "llamafoundry.db"
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_PG_MIGRATION_LOCK = 0x6C6C616D  # any constant shared by every llamafoundry process


def latest_schema_revision() -> str:
    """The revision the newest migration leaves a database at."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    assert head is not None
    return head


class StoreUnavailable(ValueError):
    """The database cannot be reached or opened (a ValueError: the CLI prints its sentence, no traceback)."""

    def __init__(self, url: str, exc: Exception) -> None:
        shown = sa.engine.make_url(url).render_as_string(hide_password=True)
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        super().__init__(
            f"The database {shown} cannot be opened ({reason}). Check --database-url (or $LLAMAFOUNDRY_DATABASE_URL) "
            "and that the database server is running."
        )


def database_url(home: Path, url: str | None = None) -> str:
    """The SQLAlchemy URL: `url` (postgresql://... uses psycopg 3), else the SQLite file in `home`."""
    if url:
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        return url
    return f"sqlite:///{home / SQLITE_FILE}"


def migrate(engine: Engine) -> None:
    """Bring the database to the newest migration (one process at a time)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_MIGRATION_LOCK})
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


def create_engine(url: str) -> Engine:
    """An engine for `url`; SQLite connections wait for the lock, run in WAL mode and begin IMMEDIATE."""
    if not url.startswith("sqlite"):
        return sa.create_engine(url, pool_pre_ping=True)
    engine = sa.create_engine(url, connect_args={"timeout": 30})

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy issues BEGIN itself (below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        _use_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _use_wal(cursor: sqlite3.Cursor, attempts: int = 100) -> None:
    """Put the database in WAL mode (readers and one writer at once). The mode is kept in the file, so only the
    first connection to a new database switches it; but switching needs the file to itself, and SQLite answers
    "database is locked" at once, without its busy wait, while another connection is switching too (servers and
    `deploy` commands opening a new store together failed this way). Such a connection retries briefly."""
    for attempt in range(attempts):
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                return
            if cursor.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() == "wal":
                return  # (a switch SQLite cannot make returns the old mode instead of failing)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
        time.sleep(0.02)
