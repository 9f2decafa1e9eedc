"""`/api/events`: Server-Sent Events per API key, fed by the store's event log.

One background task per API process tails the `job_events` table and fans rows out to the
subscribers of the row's owner. On PostgreSQL it reads when an event notification arrives
(LISTEN/NOTIFY, see `server.queue.notify`) and polls only slowly as a fallback; on SQLite it polls.
A new subscriber first receives its owner's completions from
the last `grace_seconds` (the documented SSE client subscribes *after* enqueueing, so a fast job
may finish before the stream opens); clients match on generation id, so an extra old completion
is harmless. Data lines are compact JSON, exactly as Oxen's, because the documented cURL client
greps for the literal text `"generation_id":"<id>"`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio

from server.queue import EVENT_COMPLETED as COMPLETED
from server.queue import SUCCEEDED, JobEvent, JobStore
from server.queue.notify import CHANNEL_EVENTS

log = logging.getLogger("ltx_server.events")

POLL_INTERVAL = 0.2
NOTIFIED_POLL_INTERVAL = 2.0  # the fallback when notifications wake the tail (PostgreSQL)
LOOKBACK_IDS = 200  # re-read recent ids: on PostgreSQL, sequence order is not commit order
MAX_SUBSCRIBER_BACKLOG = 1000


def oxen_payload(event: JobEvent, result_url: Callable[[str], str] | None = None) -> dict[str, Any]:
    """The Oxen event body of a stored event: `generation_id`, `status`, `media_type`, then the facts.

    A succeeded completion gets its result URL from `result_url(job_id)`.
    """
    payload: dict[str, Any] = {"generation_id": event.job_id, "status": event.payload.get("status"),
                               "media_type": "video"}
    payload.update(event.payload)
    if event.name == COMPLETED and payload["status"] == SUCCEEDED and result_url is not None:
        payload["url"] = result_url(event.job_id)
    return payload


def format_event(name: str, payload: dict[str, Any]) -> str:
    """One SSE message: `event:` line, compact JSON `data:` line, blank line."""
    return f"event: {name}\ndata: {json.dumps(payload, separators=(',', ':'), ensure_ascii=False)}\n\n"


class EventHub:
    """Tails the store's event log and hands each event to its owner's live subscribers."""

    def __init__(self, store: JobStore, grace_seconds: float):
        self.store = store
        self.grace_seconds = grace_seconds
        # SQLite has one writer at a time, so ids appear in commit order and no look-back is needed.
        self._lookback = 0 if store.engine.dialect.name == "sqlite" else LOOKBACK_IDS
        self._subscribers: dict[str, set[asyncio.Queue[JobEvent]]] = {}
        self._seen: deque[int] = deque(maxlen=4 * LOOKBACK_IDS)
        self._seen_set: set[int] = set()
        self._last_id = 0
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._poll = NOTIFIED_POLL_INTERVAL if store.notifies else POLL_INTERVAL
        self._on_notice: Callable[[str], None] | None = None

    async def start(self) -> None:
        """Begin tailing from the current end of the log (woken by notifications where the store sends them)."""
        self._last_id = await anyio.to_thread.run_sync(self.store.last_event_id)
        if self.store.notifies:
            loop = asyncio.get_running_loop()
            self._on_notice = lambda _subject: loop.call_soon_threadsafe(self._wake.set)
            self.store.listener.subscribe(CHANNEL_EVENTS, self._on_notice)
            self.store.listener.start()
        self._task = asyncio.create_task(self._tail(), name="event-tail")

    async def stop(self) -> None:
        if self._on_notice is not None:
            self.store.listener.unsubscribe(CHANNEL_EVENTS, self._on_notice)
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _tail(self) -> None:
        while True:
            self._wake.clear()  # before the read: an event committed after it wakes the next wait
            try:
                rows = await anyio.to_thread.run_sync(self.store.events_after, max(0, self._last_id - self._lookback))
                for row in rows:
                    if row.id in self._seen_set:
                        continue
                    self._remember(row.id)
                    self._last_id = max(self._last_id, row.id)
                    for queue in list(self._subscribers.get(row.owner, ())):
                        if queue.qsize() < MAX_SUBSCRIBER_BACKLOG:
                            queue.put_nowait(row)
            except asyncio.CancelledError:
                raise
            except Exception:  # a database hiccup must not end event delivery
                log.exception("event tail failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)

    def _remember(self, event_id: int) -> None:
        if len(self._seen) == self._seen.maxlen:
            self._seen_set.discard(self._seen[0])
        self._seen.append(event_id)
        self._seen_set.add(event_id)

    async def stream(
        self,
        owner: str,
        keepalive_seconds: float,
        is_disconnected: Callable,
        decorate: Callable[[JobEvent], dict[str, Any]],
    ) -> AsyncIterator[str]:
        """The SSE body for one subscriber; `decorate` turns a row into its payload (adds URLs)."""
        queue: asyncio.Queue[JobEvent] = asyncio.Queue()
        self._subscribers.setdefault(owner, set()).add(queue)
        try:
            yield ": connected\n\n"
            since = time.time() - self.grace_seconds
            recent = await anyio.to_thread.run_sync(lambda: self.store.events_since(since, owner, (COMPLETED,)))
            sent: set[int] = set()
            for row in recent:
                sent.add(row.id)
                yield format_event(row.name, decorate(row))
            while True:
                try:
                    row = await asyncio.wait_for(queue.get(), timeout=keepalive_seconds)
                except TimeoutError:
                    if await is_disconnected():
                        return
                    yield ": keep-alive\n\n"
                    continue
                if row.id in sent:
                    continue
                yield format_event(row.name, decorate(row))
        finally:
            subscribers = self._subscribers.get(owner)
            if subscribers is not None:
                subscribers.discard(queue)
                if not subscribers:
                    self._subscribers.pop(owner, None)
