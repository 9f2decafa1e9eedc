"""LISTEN/NOTIFY wake-ups: on PostgreSQL a committed enqueue, cancel or event wakes listeners (with the
job id where it matters, and a measurable lag); nothing is sent for a rolled-back change; SQLite has no
listener and its waiters keep polling."""

from __future__ import annotations

import queue

from sqlalchemy import text

from server.queue import JobStore, NewJob
from server.queue.notify import CHANNEL_CANCEL, CHANNEL_EVENTS, CHANNEL_JOBS, decode_payload, encode_payload, notify

WAIT = 20.0  # a bound for a notification that must come (not a latency assertion)


def _new() -> NewJob:
    return NewJob(owner="alice", model="m", params={"prompt": "p"}, input_sha256="s")


def _drain(inbox: queue.Queue) -> list:
    items = []
    while not inbox.empty():
        items.append(inbox.get_nowait())
    return items


def test_payload_round_trip():
    assert decode_payload(encode_payload("job-1", 12.5)) == ("job-1", 12.5)
    assert decode_payload("foreign") == ("foreign", None)


def test_commits_wake_listeners_on_postgresql(store_url):
    store = JobStore(store_url)
    try:
        if not store_url.startswith("postgresql"):
            assert not store.notifies
            store.listener.start()  # a no-op: SQLite waiters poll
            assert not store.listener.connected.is_set()
            return
        inbox: queue.Queue = queue.Queue()
        lags: list[float] = []
        store.listener.on_lag = lags.append
        for channel in (CHANNEL_JOBS, CHANNEL_CANCEL, CHANNEL_EVENTS):
            store.listener.subscribe(channel, lambda subject, channel=channel: inbox.put((channel, subject)))
        store.listener.start()
        assert store.listener.connected.wait(WAIT)
        _drain_until_quiet = inbox.get(timeout=WAIT)  # the catch-up wake after connecting
        assert _drain_until_quiet[1] == ""
        _drain(inbox)

        (job,) = store.enqueue([_new()], b"img")
        assert inbox.get(timeout=WAIT) == (CHANNEL_JOBS, "")
        claimed = store.claim_next("w1", 30)
        assert claimed.id == job.id
        assert inbox.get(timeout=WAIT) == (CHANNEL_EVENTS, job.id)  # the started event
        store.cancel(job.id)
        got = {inbox.get(timeout=WAIT), inbox.get(timeout=WAIT)}
        assert got == {(CHANNEL_EVENTS, job.id), (CHANNEL_CANCEL, job.id)}
        assert lags and all(lag >= 0 for lag in lags)

        # A rolled-back transaction sends nothing; the next committed one does.
        with store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            notify(conn, CHANNEL_JOBS, "rolled-back", store.schema)
            conn.rollback()
        with store.engine.begin() as conn:
            notify(conn, CHANNEL_JOBS, "committed", store.schema)
        assert inbox.get(timeout=WAIT) == (CHANNEL_JOBS, "committed")
    finally:
        store.close()
