"""Engines and migrations. SQLite runs in WAL mode with immediate write transactions."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, func, inspect, select
from sqlalchemy.engine import make_url

from delivery.errors import ConfigurationError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
HEAD = "0005"


def make_engine(url: str) -> Engine:
    """An engine for a ``sqlite:///PATH`` or ``postgresql://USER@HOST:PORT/DB`` URL."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(parsed, pool_pre_ping=True)
    raise ConfigurationError(
        f"database URL {url!r}: only sqlite:/// and postgresql:// are supported"
    )


def _sqlite_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def migrate(engine: Engine) -> None:
    """Bring the schema to the head revision; a no-op when it is there already."""
    if _current_revision(engine) == HEAD:
        return
    from alembic import command  # 80 ms to import: only when the schema is behind
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        take_turns(conn, "migrate")  # processes started together on a new database
        config.attributes["connection"] = conn
        command.upgrade(config, "head")  # a no-op if another one migrated it meanwhile


def take_turns(conn: Connection, name: str) -> None:
    """Wait for any other transaction holding the lock ``name``; hold it until this one ends.

    On PostgreSQL a transaction-scoped advisory lock. SQLite needs none: every write
    transaction there begins IMMEDIATE, so writers already take turns.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(advisory_key(name))))


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for a PostgreSQL advisory lock named ``name``."""
    digest = hashlib.blake2b(name.encode(), digest_size=8, person=b"solidarity").digest()
    return int.from_bytes(digest, "big", signed=True)


def _current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        row = conn.exec_driver_sql("SELECT version_num FROM alembic_version").first()
        return str(row[0]) if row else None
