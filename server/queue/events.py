"""The event log: rows written in the same transaction as the state change they describe.

Rows hold facts (`status`, and `progress`/`stage`/`model`/`error` where they apply); the Oxen
event bodies are built from them by the API (`server.api.events.oxen_payload`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select

from server.queue.notify import CHANNEL_EVENTS, notify
from server.queue.records import JobEvent
from server.queue.tables import events


class EventLog:
    """Reading and pruning the event log (mixed into `JobStore`, which owns `engine`)."""

    engine: Engine
    schema: str

    def events_after(self, after_id: int, limit: int = 500) -> list[JobEvent]:
        """Events with id > after_id, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(events).where(events.c.id > after_id).order_by(events.c.id).limit(limit)
            ).all()
        return [JobEvent(**dict(row._mapping)) for row in rows]

    def events_since(self, since: float, owner: str, names: Iterable[str]) -> list[JobEvent]:
        """An owner's events of the given names created at or after `since` (the SSE grace window)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(events)
                .where(events.c.created_at >= since, events.c.owner == owner, events.c.name.in_(list(names)))
                .order_by(events.c.id)
            ).all()
        return [JobEvent(**dict(row._mapping)) for row in rows]

    def last_event_id(self) -> int:
        """The newest event id (0 when none)."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.coalesce(func.max(events.c.id), 0))).scalar_one())

    def prune_events(self, older_than: float) -> int:
        """Drop event rows created before `older_than` (they only feed live streams)."""
        with self.engine.begin() as conn:
            return conn.execute(delete(events).where(events.c.created_at < older_than)).rowcount

    def _event(self, conn: Any, owner: str, job_id: str, name: str, payload: dict[str, Any], now: float) -> None:
        conn.execute(insert(events).values(owner=owner, job_id=job_id, name=name, payload=payload, created_at=now))
        notify(conn, CHANNEL_EVENTS, job_id, self.schema)
