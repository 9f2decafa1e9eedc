"""Wake-ups without polling: PostgreSQL LISTEN/NOTIFY for new jobs, cancels and events.

Writers call `notify(conn, channel, payload)` inside the transaction of the state change, so the
notification is delivered exactly when (and only if) the change commits. Readers hold one
`Listener` per process: a thread with its own autocommit connection that LISTENs on the channels
and calls the subscribed callbacks. Notifications are hints, never the data: every callback
re-reads the store, and every loop keeps a slow poll as the fallback (a notification is lost while
the listener reconnects; on reconnect every subscriber is woken once to catch up).

Channels are per schema (`ltx_jobs_<schema>`), so deployments or tests sharing one database in
separate schemas do not wake each other. SQLite has no notifications: `Listener.active` is False
there and callers keep polling fast.
Payloads carry the sender's `time.time()` so the listener can measure the store's notification
lag (commit to wake-up; across hosts this includes their clock difference).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import make_url

log = logging.getLogger("ltx_server.notify")

CHANNEL_JOBS = "ltx_jobs"  # a job became claimable (enqueued, requeued, recovered)
CHANNEL_CANCEL = "ltx_cancel"  # payload job id: a processing job was cancelled or taken away
CHANNEL_EVENTS = "ltx_events"  # a row was appended to the event log
CHANNELS = (CHANNEL_JOBS, CHANNEL_CANCEL, CHANNEL_EVENTS)

Callback = Callable[[str], None]


def channel_name(channel: str, schema: str) -> str:
    """The channel of one schema (PostgreSQL identifiers are at most 63 bytes)."""
    return f"{channel}_{schema}"[:63]


def notify(conn: Any, channel: str, subject: str = "", schema: str = "public") -> None:
    """Queue a notification in the current transaction (PostgreSQL only; a no-op on SQLite)."""
    if conn.dialect.name != "postgresql":
        return
    conn.execute(select(func.pg_notify(channel_name(channel, schema), encode_payload(subject, time.time()))))


def encode_payload(subject: str, sent_at: float) -> str:
    """`<sent unix time>|<subject>` (NOTIFY payloads are text, under 8000 bytes)."""
    return f"{sent_at:.6f}|{subject}"


def decode_payload(payload: str) -> tuple[str, float | None]:
    """(subject, sent time or None) of a payload; tolerant of foreign senders."""
    stamp, sep, subject = payload.partition("|")
    if not sep:
        return payload, None
    try:
        return subject, float(stamp)
    except ValueError:
        return payload, None


def libpq_url(sqlalchemy_url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as a libpq URI for psycopg (query options such as search_path kept)."""
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)


class Listener:
    """One LISTEN connection per process, fanning notifications out to callbacks (thread-safe)."""

    RECONNECT_DELAY = 1.0

    def __init__(self, url: str, schema: str = "public", on_lag: Callable[[float], None] | None = None):
        self.active = url.startswith("postgresql")
        self._names = {channel_name(channel, schema): channel for channel in CHANNELS}
        self._url = url
        self.on_lag = on_lag
        self._callbacks: dict[str, list[Callback]] = {channel: [] for channel in CHANNELS}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self.connected = threading.Event()

    def subscribe(self, channel: str, callback: Callback) -> None:
        """Call `callback(subject)` on each notification of `channel` (from the listener thread)."""
        with self._lock:
            self._callbacks[channel].append(callback)

    def unsubscribe(self, channel: str, callback: Callback) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._callbacks[channel].remove(callback)

    def start(self) -> Listener:
        """Start listening (no-op on SQLite)."""
        if self.active and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="store-listener", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
        if self._thread is not None:
            self._thread.join(timeout=3)

    def _dispatch(self, channel: str, subject: str) -> None:
        with self._lock:
            callbacks = list(self._callbacks.get(channel, ()))
        for callback in callbacks:
            try:
                callback(subject)
            except Exception:
                log.exception("notification callback failed")

    def _run(self) -> None:
        # deferred: only a process listening on PostgreSQL needs the driver (SQLite stores never start this thread).
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(libpq_url(self._url), autocommit=True) as conn:
                    self._conn = conn
                    for name in self._names:
                        conn.execute(f'LISTEN "{name}"')
                    self.connected.set()
                    for channel in CHANNELS:  # catch up on anything missed while not listening
                        self._dispatch(channel, "")
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            subject, sent_at = decode_payload(note.payload)
                            if sent_at is not None and self.on_lag is not None:
                                self.on_lag(max(0.0, time.time() - sent_at))
                            self._dispatch(self._names.get(note.channel, note.channel), subject)
            except Exception as exc:
                self.connected.clear()
                if self._stop.is_set():
                    return
                log.warning("store listener disconnected (%s); reconnecting", exc)
                self._stop.wait(self.RECONNECT_DELAY)
            finally:
                self._conn = None
