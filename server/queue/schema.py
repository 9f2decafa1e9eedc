"""Versioned schema migrations (Alembic), applied at start under a lock so many nodes may start at once.

`migrate(engine)` takes the lock, then: an empty database is created from the first revision up;
a database made by the pre-migration code (tables, no `alembic_version`) is stamped at the
baseline revision and upgraded; anything else is upgraded to head. The lock is a PostgreSQL
transaction-level advisory lock (released at commit, also if the process dies) or, on SQLite,
an exclusive `flock` on `<database>.migrate.lock` (released by the kernel when the process dies).
"""

from __future__ import annotations

import contextlib
import fcntl
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, func, inspect, select

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BASELINE = "0001_baseline"
# One lock id per schema: tests (and tenants) sharing a database in separate schemas do not wait on each other.
LOCK_NAME = "ltx-server schema migration"


def alembic_config(connection: Any = None) -> Config:
    """An Alembic config for the store's migrations (no ini file), bound to `connection` when given."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision of the code."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head() or BASELINE


def current_revision(engine: Engine) -> str | None:
    """The database's revision (None before any migration ran)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def migrate(engine: Engine) -> str:
    """Bring the database to the head revision under the migration lock; returns the revision."""
    head = head_revision()
    if current_revision(engine) == head:  # the common case: no lock needed to see there is nothing to do
        return head
    with _migration_lock(engine) as conn:
        current = MigrationContext.configure(conn).get_current_revision()
        if current == head:
            return head
        config = alembic_config(conn)
        if current is None and inspect(conn).has_table("jobs"):
            command.stamp(config, BASELINE)  # made by the pre-migration code: its schema is the baseline
        command.upgrade(config, "head")
    return head


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[Any]:
    """A connection in a transaction, holding the deployment-wide migration lock until it commits."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            schema = conn.execute(select(func.current_schema())).scalar() or ""
            key = zlib.crc32(f"{LOCK_NAME}:{schema}".encode()) - 2**31  # a signed 32-bit int fits bigint
            conn.execute(select(func.pg_advisory_xact_lock(key)))
            yield conn
        return
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        with engine.begin() as conn:  # one process owns an in-memory database: nothing to race
            yield conn
        return
    lock_path = Path(f"{database}.migrate.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    # Hand-rolled with fcntl (no extra dependency): an advisory lock the kernel drops with the process.
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            with engine.begin() as conn:
                yield conn
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
