"""Reads that must not block: one job row by id, from a SQLite file, on the caller's own thread.

The status read is the API's most frequent call and runs in the event loop (`JobStore.get_nowait`).
Through SQLAlchemy's `Connection.execute` it cost ~135 us of CPU, most of it checking a connection
out of the pool, building an execution context and wrapping the row; the lookup itself is a few
microseconds. This reader keeps what SQLAlchemy gives (the statement compiled by the dialect, each
column's own result processor, the engine's connect-time pragmas and busy timeout) and leaves out
the per-call machinery: it holds one DBAPI connection per thread and runs the compiled SQL on it.
Hand-rolled on purpose, and only for this one statement; every other query goes through SQLAlchemy.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, Select
from sqlalchemy.exc import DBAPIError


class Locked(Exception):
    """The file is locked (or the read failed) beyond the engine's busy timeout."""


class QuickRowReader:
    """Run one compiled SELECT (by-id, at most one row) on a per-thread connection of `engine`."""

    def __init__(self, engine: Engine, statement: Select, make: Callable[[dict[str, Any]], Any]):
        compiled = statement.compile(dialect=engine.dialect)
        self.engine = engine
        self.sql = compiled.string
        self.order = list(compiled.positiontup or ())  # qmark style: the bound names in SQL order
        columns = list(statement.selected_columns)
        self.names = [column.key for column in columns]
        self.processors = [column.type.dialect_impl(engine.dialect).result_processor(engine.dialect, None)
                           for column in columns]
        self.make = make
        self._local = threading.local()
        self._opened: list[Any] = []
        self._lock = threading.Lock()

    def one(self, params: dict[str, Any]) -> Any | None:
        """The row made into an object by `make`, or None; `Locked` when SQLite would make it wait."""
        try:
            row = self._connection().execute(self.sql, [params[name] for name in self.order]).fetchone()
        except (sqlite3.OperationalError, DBAPIError) as exc:  # locked past the busy timeout (or at connect)
            raise Locked(str(exc)) from exc
        except sqlite3.Error as exc:  # anything else: start over with a fresh connection next time
            self._drop()
            raise Locked(str(exc)) from exc
        if row is None:
            return None
        return self.make({name: value if process is None else process(value)
                          for name, process, value in zip(self.names, self.processors, row, strict=True)})

    def close(self) -> None:
        """Give every thread's connection back to the engine's pool (which `dispose` then closes)."""
        with self._lock:
            opened, self._opened = self._opened, []
        for connection in opened:
            connection.close()
        self._local = threading.local()

    def _connection(self) -> sqlite3.Connection:
        held = getattr(self._local, "connection", None)
        if held is None:
            held = self.engine.raw_connection()  # runs the engine's connect hooks: WAL, busy timeout
            with self._lock:
                self._opened.append(held)
            self._local.connection = held
        # No transaction is ever opened on it (SELECT alone does not begin one), so each read sees
        # the newest committed state, as a fresh pooled connection would.
        return held.driver_connection

    def _drop(self) -> None:
        held = getattr(self._local, "connection", None)
        self._local.connection = None
        if held is not None:
            with self._lock:
                if held in self._opened:
                    self._opened.remove(held)
            held.invalidate()
