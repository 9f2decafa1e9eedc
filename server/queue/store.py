"""The durable job store: one `JobStore` interface over SQLAlchemy (SQLite WAL or PostgreSQL).

Storage only, in four parts: the queue and its start images (`jobs`), the event log (`events`),
the worker registry (`workers`) and the schema (`tables`). Events are rows in the same database,
written in the same transaction as the state change they describe; API processes tail that
table, so workers and API processes stay decoupled (any number of each, on any host sharing it).
"""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError

from server.queue.events import EventLog
from server.queue.jobs import JobQueue
from server.queue.tables import make_engine as make_engine
from server.queue.tables import metadata
from server.queue.workers import WorkerRegistry


class JobStore(JobQueue, EventLog, WorkerRegistry):
    """The queue's single interface; the API, the workers and the janitor all go through it.
    """

    def __init__(self, url: str, *, create: bool = True):
        self.url = url
        self.engine = make_engine(url)
        if create:
            self.create_schema()

    def create_schema(self) -> None:
        """Create missing tables (idempotent; safe when several processes start together)."""
        try:
            metadata.create_all(self.engine)
        except IntegrityError:  # another process created them in between (PostgreSQL)
            pass
        except Exception:
            # A concurrent CREATE on PostgreSQL can fail with a duplicate-type error; the
            # schema exists afterwards either way.
            metadata.create_all(self.engine)

    def close(self) -> None:
        """Release pooled connections."""
        self.engine.dispose()
