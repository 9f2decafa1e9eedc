"""The durable job store: one `JobStore` interface over SQLAlchemy (SQLite WAL or PostgreSQL).

Storage only, in four parts: the queue and its start images (`jobs`), the event log (`events`),
the worker registry (`workers`) and the schema (`tables`, migrated by `schema`); `notify` wakes
readers on PostgreSQL (LISTEN/NOTIFY) instead of making them poll. Events are rows in the same database,
written in the same transaction as the state change they describe; API processes tail that
table, so workers and API processes stay decoupled (any number of each, on any host sharing it).
"""

from __future__ import annotations

from sqlalchemy import Engine, func, select

from server.queue.events import EventLog
from server.queue.jobs import GET_JOB, QUICK_BUSY_SECONDS, JobQueue, job_from_columns
from server.queue.notify import Listener
from server.queue.quick_read import QuickRowReader
from server.queue.schema import migrate
from server.queue.stats import StoreStats
from server.queue.tables import make_engine as make_engine
from server.queue.workers import WorkerRegistry


class JobStore(JobQueue, EventLog, WorkerRegistry, StoreStats):
    """The queue's single interface; the API, the workers and the janitor all go through it.
    """

    def __init__(self, url: str, *, create: bool = True):
        self.url = url
        self.engine = make_engine(url)
        # For reads that must not wait (`get_nowait`): a SQLite file only; a lock makes them give up.
        local_file = self.engine.dialect.name == "sqlite" and self.engine.url.database not in (None, "", ":memory:")
        self.quick_engine = make_engine(url, busy_timeout=QUICK_BUSY_SECONDS) if local_file else None
        self.quick_reads = QuickRowReader(self.quick_engine, GET_JOB, job_from_columns) if self.quick_engine else None
        self.schema = _current_schema(self.engine)
        # Started by the processes that wait on the store (workers, the SSE hub): `listener.start()`.
        self.listener = Listener(url, self.schema)
        if create:
            self.create_schema()

    @property
    def notifies(self) -> bool:
        """True where writes wake listeners (PostgreSQL), so waiters may poll slowly."""
        return self.listener.active

    def create_schema(self) -> None:
        """Create or upgrade the schema to the newest migration (under a lock; safe when nodes start together)."""
        migrate(self.engine)

    def close(self) -> None:
        """Stop listening and release pooled connections."""
        self.listener.close()
        self.engine.dispose()
        if self.quick_reads is not None:
            self.quick_reads.close()
        if self.quick_engine is not None:
            self.quick_engine.dispose()


def _current_schema(engine: Engine) -> str:
    """The PostgreSQL schema the store's tables live in (notification channels are per schema)."""
    if engine.dialect.name != "postgresql":
        return "main"
    with engine.connect() as conn:
        return str(conn.execute(select(func.current_schema())).scalar() or "public")
